"""Typed-API validation: sampling fields are named as the proto names them."""

from __future__ import annotations

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.validation import Limits, check_chat

LIMITS = Limits(max_messages=4, max_message_chars=100, max_tokens_cap=64)
HELLO = [chat_pb2.ChatMessage(role="user", content="hi")]


def fields(**kwargs: object) -> set[str]:
    args: dict[str, object] = {
        "model": "m",
        "messages": HELLO,
        "sampling": chat_pb2.SamplingParams(),
        "limits": LIMITS,
        "sampling_prefix": "sampling.",
    }
    args.update(kwargs)
    return {v.field for v in check_chat(**args)}


def test_valid_request_has_no_violations() -> None:
    assert fields() == set()


def test_unset_optional_sampling_is_not_zero() -> None:
    # proto3 `optional`: an unset max_tokens is "provider default", not 0 (which is invalid).
    assert fields(sampling=chat_pb2.SamplingParams(temperature=0.0)) == set()


def test_negative_and_huge_max_tokens() -> None:
    assert fields(sampling=chat_pb2.SamplingParams(max_tokens=-5)) == {"sampling.max_tokens"}
    assert fields(sampling=chat_pb2.SamplingParams(max_tokens=65)) == {"sampling.max_tokens"}


def test_nan_temperature() -> None:
    nan = chat_pb2.SamplingParams(temperature=float("nan"))
    assert fields(sampling=nan) == {"sampling.temperature"}


def test_empty_model_and_messages() -> None:
    assert fields(model="", messages=[]) == {"model", "messages"}


def test_oversize_user_and_metadata() -> None:
    assert fields(user="u" * 300) == {"user"}
    assert fields(metadata={str(i): "v" for i in range(17)}) == {"metadata"}


def test_empty_stop_sequence() -> None:
    assert fields(sampling=chat_pb2.SamplingParams(stop=[""])) == {"sampling.stop"}


def test_client_texts_are_bounded_and_nul_free_like_the_record() -> None:
    long_stop = chat_pb2.SamplingParams(stop=["x" * 1100])
    assert fields(sampling=long_stop) == {"sampling.stop"}
    assert fields(sampling=chat_pb2.SamplingParams(stop=["a\x00b"])) == {"sampling.stop"}
    assert fields(user="bad\x00user") == {"user"}
    assert fields(user="u" * 257) == {"user"}
    assert fields(metadata={"k": "v\x00"}) == {"metadata['k']"}
    named = [chat_pb2.ChatMessage(role="user", content="hi", name="n" * 257)]
    assert fields(messages=named) == {"messages[0].name"}
    nul_name = [chat_pb2.ChatMessage(role="user", content="hi", name="a\x00")]
    assert fields(messages=nul_name) == {"messages[0].name"}


def test_gateway_limits_are_within_the_records() -> None:
    # A request the gateway serves must never be a record the logger rejects (the logger
    # validates with common/record_limits.py).
    from hybridinference.common import record_limits as logger
    from hybridinference.gateway import validation as gateway

    assert gateway.MAX_STOP_SEQUENCES <= logger.MAX_STOP_SEQUENCES
    assert gateway.MAX_STOP_CHARS <= logger.MAX_STOP_CHARS
    assert gateway.MAX_USER_CHARS <= logger.MAX_TEXT_CHARS
    assert gateway.MAX_MODEL_NAME <= logger.MAX_TEXT_CHARS
    assert gateway.MAX_METADATA_ENTRIES <= logger.MAX_METADATA_ENTRIES
    assert gateway.MAX_METADATA_KEY_CHARS <= logger.MAX_METADATA_KEY_CHARS
    assert gateway.MAX_METADATA_CHARS <= logger.MAX_METADATA_VALUE_CHARS
    assert fields(metadata={"k" * 129: "v"}) == {f"metadata[{'k' * 32}]"}
