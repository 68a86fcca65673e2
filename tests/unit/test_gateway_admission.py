"""Admission against the model: capabilities, unknown and passed-through fields, the output cap,
and the field names of each surface."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import json_format

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import CapabilitySettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.admission import prepare
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.naming import TYPED
from hybridinference.gateway.openai_request import parse_chat_completion
from hybridinference.gateway.validation import Limits

LIMITS = Limits(max_messages=8, max_message_chars=1000, max_tokens_cap=512)
ASK = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def openai_call(**body: object) -> ChatCall:
    return parse_chat_completion(orjson.dumps({"model": "m", "messages": ASK, **body}), 1 << 20)


def refused(call: ChatCall, caps: CapabilitySettings | None) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        prepare(call, caps, LIMITS)
    return caught.value


def test_plain_request_gets_the_models_output_limit_as_its_default() -> None:
    call = openai_call()
    prepare(call, CapabilitySettings(max_output_tokens=100), LIMITS)
    assert not call.sampling.HasField("max_tokens")
    assert call.sampling.default_max_tokens == 100
    # The declared limit is also the cap.
    error = refused(
        openai_call(max_completion_tokens=101), CapabilitySettings(max_output_tokens=100)
    )
    assert error.param == "max_completion_tokens"


def test_unsupported_features_are_named_per_surface() -> None:
    error = refused(openai_call(tools=[TOOL], n=2), CapabilitySettings())
    assert error.reason == "unsupported_parameter"
    assert [v.field for v in error.violations] == ["tools", "n"]
    typed = ChatCall(
        model="m",
        messages=[
            chat_pb2.ChatMessage(
                role="user",
                parts=[chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url="https://x/y.png"))],
            )
        ],
        sampling=chat_pb2.SamplingParams(logprobs=True),
        stream=False,
        naming=TYPED,
    )
    error = refused(typed, CapabilitySettings())
    assert [v.field for v in error.violations] == ["sampling.logprobs", "messages[0].parts[0]"]


def test_unknown_fields_are_refused_unless_passed_through() -> None:
    error = refused(openai_call(frobnicate=1, top_k=3), CapabilitySettings())
    assert error.reason == "unknown_parameter" and error.param == "frobnicate"
    call = openai_call(frobnicate={"a": [1, 2]})
    prepare(call, CapabilitySettings(passthrough_fields=["frobnicate"]), LIMITS)
    extra = json_format.MessageToDict(call.options.extra_body)
    assert extra == {"frobnicate": {"a": [1, 2]}}


def test_every_problem_at_once_with_openai_paths() -> None:
    error = refused(
        openai_call(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "x"}}}],
            tool_choice={"type": "function", "function": {"name": "g"}},
            top_logprobs=3,
            messages=[{"role": "tool", "tool_call_id": "nope", "content": "r"}],
        ),
        None,
    )
    assert {v.field for v in error.violations} == {
        "tools[0].function.parameters.type",
        "tool_choice",
        "top_logprobs",
        "messages[0].tool_call_id",
    }


def test_a_tool_result_answering_an_earlier_call_is_accepted() -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    call = openai_call(messages=messages, tools=[TOOL])
    prepare(call, CapabilitySettings(tools=True), LIMITS)
    assert call.messages[1].tool_calls[0].function.name == "f"
    assert call.messages[2].tool_call_id == "c1"
