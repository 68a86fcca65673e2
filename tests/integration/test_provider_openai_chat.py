"""The whole chat surface through the OpenAI-wire adapters (openai via the official SDK,
openai_compatible and vllm over raw HTTP) against the OpenAI fake speaking the real wire format:
tool loops with parallel calls, structured output, logprobs, n=2, reasoning, error meaning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pydantic
import pytest
from google.protobuf import struct_pb2

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter, build_adapter
from support.fakes.openai_api import OpenAIFake
from support.generations import run_generation

KINDS = ["openai", "openai_compatible", "vllm"]


class Weather(pydantic.BaseModel):
    city: str
    celsius: int
    sunny: bool


WEATHER_TOOL = chat_pb2.Tool(
    type="function",
    function=chat_pb2.FunctionDefinition(
        name="get_weather", description="Weather in a city", strict=True
    ),
)
WEATHER_TOOL.function.parameters.update(
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
)
TIME_TOOL = chat_pb2.Tool(type="function", function=chat_pb2.FunctionDefinition(name="get_time"))
TIME_TOOL.function.parameters.update({"type": "object", "properties": {}})


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    yield from OpenAIFake.running()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-test-secret-key-0001")


def make(kind: str, fake: OpenAIFake, model: str = "ok", **options: Any) -> ProviderAdapter:
    settings = ProviderEndpointSettings(
        id=f"{kind}-ep", model=model, base_url=fake.base_url, api_key_env="FAKE_KEY", **options
    )
    return build_adapter(kind, settings)


def request(
    messages: list[chat_pb2.ChatMessage] | None = None,
    options: chat_pb2.ChatOptions | None = None,
    **sampling: Any,
) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="req-1",
        endpoint="x",
        messages=messages or [chat_pb2.ChatMessage(role="user", content="weather in rome?")],
        sampling=chat_pb2.SamplingParams(**sampling),
        options=options,
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_loop_with_parallel_calls(kind: str, fake: OpenAIFake) -> None:
    options = chat_pb2.ChatOptions(tools=[WEATHER_TOOL, TIME_TOOL])
    events, merged = await run_generation(make(kind, fake), request(options=options))
    sent = fake.state.requests[-1]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["days"]["minimum"] == 1
    assert isinstance(
        sent["tools"][0]["function"]["parameters"]["properties"]["days"]["minimum"], int
    )
    assert sent["tools"][0]["function"]["strict"] is True
    # Fragments stream as they come: the first of each call names it, then arguments follow.
    fragments = [f for e in events for f in e.tool_calls]
    assert fragments[0].id == "call_0_0" and fragments[0].name == "get_weather"
    assert any(f.arguments and not f.name for f in fragments)
    [choice] = merged.choices()
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "x", "days": 1}
    assert json.loads(calls[1].function.arguments) == {}
    # The loop's second turn: the calls and their results go back; the model answers in text.
    history = [
        chat_pb2.ChatMessage(role="user", content="weather in rome?"),
        chat_pb2.ChatMessage(role="assistant", tool_calls=calls),
        chat_pb2.ChatMessage(role="tool", tool_call_id=calls[0].id, content="sunny"),
        chat_pb2.ChatMessage(role="tool", tool_call_id=calls[1].id, content="noon"),
    ]
    _, answer = await run_generation(make(kind, fake), request(history, options))
    sent = fake.state.requests[-1]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in calls
        ],
    }
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_0_0"}
    assert answer.text() == "results: sunny; noon"
    assert answer.finish_reason() == chat_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize("kind", KINDS)
async def test_named_tool_choice_and_no_parallel_calls(kind: str, fake: OpenAIFake) -> None:
    options = chat_pb2.ChatOptions(
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=chat_pb2.ToolChoice(function_name="get_time"),
        parallel_tool_calls=False,
    )
    _, merged = await run_generation(make(kind, fake), request(options=options))
    sent = fake.state.requests[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert sent["parallel_tool_calls"] is False
    assert [c.function.name for c in merged.choices()[0].message.tool_calls] == ["get_time"]


@pytest.mark.parametrize("kind", KINDS)
async def test_structured_output_validates(kind: str, fake: OpenAIFake) -> None:
    schema = struct_pb2.Struct()
    schema.update(Weather.model_json_schema())
    options = chat_pb2.ChatOptions(
        response_format=chat_pb2.ResponseFormat(
            type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=chat_pb2.JsonSchema(name="weather", schema=schema, strict=True),
        )
    )
    _, merged = await run_generation(make(kind, fake), request(options=options))
    sent = fake.state.requests[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "weather"
    assert sent["json_schema"]["strict"] is True
    assert Weather.model_validate_json(merged.text()) == Weather(city="x", celsius=1, sunny=True)


@pytest.mark.parametrize("kind", KINDS)
async def test_logprobs_and_two_choices(kind: str, fake: OpenAIFake) -> None:
    events, merged = await run_generation(
        make(kind, fake), request(n=2, logprobs=True, top_logprobs=2, max_tokens=3)
    )
    sent = fake.state.requests[-1]
    assert (sent["n"], sent["logprobs"], sent["top_logprobs"]) == (2, True, 2)
    first, second = merged.choices()
    assert first.message.content == "w0 w1 w2" and second.message.content == "c1w0c1 w1c1 w2"
    assert [t.token for t in first.logprobs.content] == ["w0", " w1", " w2"]
    assert first.logprobs.content[1].bytes == b" w1"
    assert [t.token for t in first.logprobs.content[0].top_logprobs] == ["w0", "alt1"]
    assert len(second.logprobs.content) == 3
    assert first.finish_reason == second.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    # Usage once, on the last event; a finish reason per choice.
    assert [e.HasField("usage") for e in events].count(True) == 1 and events[-1].HasField("usage")
    assert events[-1].usage.completion_tokens == 6


@pytest.mark.parametrize("kind", KINDS)
async def test_reasoning_deltas_and_tokens(kind: str, fake: OpenAIFake) -> None:
    options = chat_pb2.ChatOptions(reasoning_effort=chat_pb2.REASONING_EFFORT_HIGH)
    events, merged = await run_generation(make(kind, fake), request(options=options, max_tokens=2))
    assert fake.state.requests[-1]["reasoning_effort"] == "high"
    assert events[0].reasoning and events[0].model
    [choice] = merged.choices()
    assert choice.message.reasoning_content == "think0 think1 think2 "
    assert choice.message.content == "w0 w1"
    assert events[-1].usage.reasoning_tokens == 3
    assert events[-1].usage.completion_tokens == 5


@pytest.mark.parametrize("kind", KINDS)
async def test_reasoning_counts_as_output_for_the_first_token_deadline(
    kind: str, fake: OpenAIFake
) -> None:
    # Reasoning every 150 ms, the first content after ~450 ms: past the 0.3 s first-token
    # timeout, which the model meets with its first reasoning delta.
    adapter = make(kind, fake, model="reasoning-slow", first_token_timeout_s=0.3)
    _, merged = await run_generation(adapter, request(max_tokens=2))
    assert merged.text() == "w0 w1"


@pytest.mark.parametrize("kind", KINDS)
async def test_context_length_error_keeps_its_meaning(kind: str, fake: OpenAIFake) -> None:
    with pytest.raises(ServiceError) as caught:
        await run_generation(make(kind, fake, model="context-overflow"), request())
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "context_length_exceeded" and error.param == "messages"
    assert "maximum context length" in error.message
    assert f"{kind}-ep" not in error.message and "127.0.0.1" not in error.message


async def test_unreachable_upstream_message_names_no_address() -> None:
    adapter = build_adapter(
        "openai_compatible",
        ProviderEndpointSettings(id="hidden-ep", model="m", base_url="http://127.0.0.1:9/v1"),
    )
    with pytest.raises(ServiceError) as caught:
        await run_generation(adapter, request())
    assert caught.value.reason == "upstream_connect_failed"
    assert "127.0.0.1" not in caught.value.message and "hidden-ep" not in caught.value.message


def vllm_options() -> chat_pb2.ChatOptions:
    options = chat_pb2.ChatOptions(vllm=chat_pb2.VllmParams(top_k=5, min_p=0.1))
    options.vllm.structured_outputs.choice.extend(["yes", "no"])
    options.vllm.chat_template_kwargs.update({"enable_thinking": False})
    options.extra_body.update({"priority": 3})
    return options


@pytest.mark.parametrize("kind", ["openai_compatible", "vllm"])
async def test_engines_get_vllm_options_and_passthrough_fields(kind: str, fake: OpenAIFake) -> None:
    history = [
        chat_pb2.ChatMessage(
            role="user",
            parts=[
                chat_pb2.ContentPart(text="what is this?"),
                chat_pb2.ContentPart(
                    image_url=chat_pb2.ImageUrl(
                        url="data:image/png;base64,AAAA", detail=chat_pb2.IMAGE_DETAIL_LOW
                    )
                ),
            ],
        ),
        chat_pb2.ChatMessage(role="assistant", content="a", reasoning_content="because"),
        chat_pb2.ChatMessage(role="user", content="sure?"),
    ]
    await run_generation(
        make(kind, fake), request(history, vllm_options(), logit_bias={42: -100.0})
    )
    sent = fake.state.requests[-1]
    assert (sent["top_k"], round(sent["min_p"], 3)) == (5, 0.1)
    assert sent["structured_outputs"] == {"choice": ["yes", "no"]}
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["priority"] == 3 and sent["logit_bias"] == {"42": -100.0}
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
    }
    assert sent["messages"][1]["reasoning_content"] == "because"


async def test_openai_refuses_what_it_cannot_take_by_name(fake: OpenAIFake) -> None:
    calls = len(fake.state.requests)
    options = vllm_options()
    options.gemini.thinking_budget = 100
    with pytest.raises(ServiceError) as caught:
        await run_generation(make("openai", fake), request(options=options))
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "unsupported_parameter"
    fields = [v.field for v in error.violations]
    assert fields == [
        "top_k",
        "min_p",
        "chat_template_kwargs",
        "structured_outputs",
        "extra_body.google.thinking_config.thinking_budget",
    ]
    history = [chat_pb2.ChatMessage(role="assistant", content="a", reasoning_content="why")]
    with pytest.raises(ServiceError) as again:
        await run_generation(make("openai", fake), request(history))
    assert again.value.param == "messages[0].reasoning_content"
    # Refused before any call upstream.
    assert len(fake.state.requests) == calls


async def test_openai_gets_passthrough_fields_through_the_sdk(fake: OpenAIFake) -> None:
    options = chat_pb2.ChatOptions(service_tier="flex", user="u-1")
    options.extra_body.update({"prediction_hint": "x"})
    await run_generation(make("openai", fake), request(options=options, max_tokens=2))
    sent = fake.state.requests[-1]
    assert (sent["service_tier"], sent["user"], sent["prediction_hint"]) == ("flex", "u-1", "x")
    assert sent["max_completion_tokens"] == 2


async def test_tool_call_stream_keeps_fragment_order_under_merging(fake: OpenAIFake) -> None:
    # Everything the fake writes may arrive in one read; merged events must still rebuild the
    # same arguments as OpenAI's own stream accumulator would.
    options = chat_pb2.ChatOptions(tools=[WEATHER_TOOL])
    events, _ = await run_generation(make("vllm", fake), request(options=options))
    rebuilt: dict[int, str] = {}
    for event in events:
        for fragment in event.tool_calls:
            rebuilt[fragment.index] = rebuilt.get(fragment.index, "") + fragment.arguments
    assert json.loads(rebuilt[0]) == {"city": "x", "days": 1}
