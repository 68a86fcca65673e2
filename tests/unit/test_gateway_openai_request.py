"""OpenAI request parsing: valid bodies become ChatCalls; every bad input names its field."""

from __future__ import annotations

import grpc
import orjson
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.gateway.admission import prepare
from hybridinference.gateway.openai_request import parse_chat_completion
from hybridinference.gateway.validation import Limits

LIMITS = Limits(max_messages=8, max_message_chars=1000, max_tokens_cap=512)
MAX_BODY = 64 * 1024


def parse(body: object) -> object:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    call = parse_chat_completion(raw, MAX_BODY)
    # No model route: the checks that need none (capabilities are tested with the mesh).
    prepare(call, None, LIMITS)
    return call


def rejected(body: object) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        parse(body)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def base(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_valid_request_with_every_supported_field() -> None:
    call = parse(
        base(
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=16,
            temperature=0.5,
            top_p=1,
            stop=["END"],
            seed=7,
            user="u1",
            presence_penalty=0.1,
            frequency_penalty=-0.1,
        )
    )
    assert call.model == "m"  # type: ignore[attr-defined]
    assert call.stream and call.include_usage  # type: ignore[attr-defined]
    sampling = call.sampling  # type: ignore[attr-defined]
    assert sampling.max_tokens == 16 and sampling.temperature == 0.5
    assert list(sampling.stop) == ["END"] and sampling.seed == 7


def test_text_parts_are_joined_and_null_assistant_content_is_empty() -> None:
    call = parse(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": None},
            ],
        }
    )
    assert [m.content for m in call.messages] == ["ab", ""]  # type: ignore[attr-defined]


def test_include_usage_only_applies_to_streams() -> None:
    assert not parse(base(stream_options={"include_usage": True})).include_usage  # type: ignore[attr-defined]


def test_max_completion_tokens_is_accepted() -> None:
    assert parse(base(max_completion_tokens=5)).sampling.max_tokens == 5  # type: ignore[attr-defined]


def test_malformed_json() -> None:
    error = rejected(b'{"model": "m", "messages": [')
    assert error.reason == "invalid_json"
    assert "parse the JSON body" in error.message


def test_non_object_body() -> None:
    assert rejected(b"[1, 2]").reason == "invalid_json"


def test_oversize_body_is_rejected_before_parsing() -> None:
    error = rejected(b"x" * (MAX_BODY + 1))
    assert error.reason == "request_too_large"
    assert error.http_status == 413
    assert str(MAX_BODY) in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (base(model=3), "model"),
        ({"model": "m"}, "messages"),
        (base(messages=[]), "messages"),
        (base(messages="hi"), "messages"),
        (base(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (base(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (
            base(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content[0].image_url",
        ),
        (base(messages=[{"role": "user", "content": "x" * 1001}]), "messages[0].content"),
        (base(messages=[{"role": "user", "content": "x"}] * 9), "messages"),
        (base(max_tokens=-1), "max_tokens"),
        (base(max_tokens=0), "max_tokens"),
        (base(max_tokens=10**12), "max_tokens"),
        (base(max_tokens=513), "max_tokens"),
        (base(max_tokens="10"), "max_tokens"),
        (base(max_tokens=True), "max_tokens"),
        (base(temperature=3), "temperature"),
        (base(temperature="hot"), "temperature"),
        (base(top_p=0), "top_p"),
        (base(stop=["a", "b", "c", "d", "e"]), "stop"),
        (base(stop=[1]), "stop"),
        (base(stream="yes"), "stream"),
        (base(stream_options=[]), "stream_options"),
        (base(n=0), "n"),
        (base(seed=1.5), "seed"),
    ],
)
def test_bad_input_names_the_field(body: dict[str, object], field: str) -> None:
    error = rejected(body)
    assert error.param == field, error.message
    assert field in error.message
    body_json = orjson.loads(error.openai_body())
    assert body_json["error"]["param"] == field
    assert body_json["error"]["type"] == "invalid_request_error"
    assert error.http_status == 400


def test_every_problem_is_reported_at_once() -> None:
    error = rejected({"messages": [], "temperature": 9})
    assert {v.field for v in error.violations} >= {"model", "messages"}
