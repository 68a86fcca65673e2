"""The whole chat surface through the gemini adapter (the real google-genai SDK) against the
Gemini fake on Gemini's REST wire format: function calling loops with parallel calls and thought
signatures, tool config, structured output, thinking, candidates, logprobs, refusals, errors."""

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
from support.fakes.gemini_api import GeminiFake, camel_keys, field_of, signature_of
from support.generations import run_generation


class Weather(pydantic.BaseModel):
    city: str
    celsius: int
    sunny: bool


def tool(name: str, properties: dict[str, Any], strict: bool = False) -> chat_pb2.Tool:
    result = chat_pb2.Tool(type="function", function=chat_pb2.FunctionDefinition(name=name))
    if strict:
        result.function.strict = True
    result.function.parameters.update({"type": "object", "properties": properties})
    return result


WEATHER = tool("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}})
TIME = tool("get_time", {})


@pytest.fixture(scope="module")
def fake() -> Iterator[GeminiFake]:
    yield from GeminiFake.running()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_FAKE_KEY", "AIza-test-secret-0001")


def make(fake: GeminiFake, model: str = "ok", **options: Any) -> ProviderAdapter:
    settings = ProviderEndpointSettings(
        id="gemini-ep", model=model, base_url=fake.url, api_key_env="GEMINI_FAKE_KEY", **options
    )
    return build_adapter("gemini", settings)


def request(
    messages: list[chat_pb2.ChatMessage] | None = None,
    options: chat_pb2.ChatOptions | None = None,
    **sampling: Any,
) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="req-g",
        endpoint="gemini-ep",
        messages=messages or [chat_pb2.ChatMessage(role="user", content="weather in rome?")],
        sampling=chat_pb2.SamplingParams(**sampling),
        options=options,
    )


async def test_function_calling_loop_with_parallel_calls(fake: GeminiFake) -> None:
    options = chat_pb2.ChatOptions(tools=[WEATHER, TIME])
    _, merged = await run_generation(make(fake), request(options=options))
    sent = fake.state.requests[-1]
    declarations = sent["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["get_weather", "get_time"]
    parameters = field_of(declarations[0], "parametersJsonSchema")
    assert parameters["properties"]["city"] == {"type": "string"}
    assert "toolConfig" not in sent
    [choice] = merged.choices()
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    calls = list(choice.message.tool_calls)
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "x", "days": 1}
    assert len({c.id for c in calls}) == 2
    # The turn's results go back as function responses in one user turn; the model answers.
    history = [
        chat_pb2.ChatMessage(role="user", content="weather in rome?"),
        chat_pb2.ChatMessage(role="assistant", tool_calls=calls),
        chat_pb2.ChatMessage(role="tool", tool_call_id=calls[0].id, content='{"sky": "sunny"}'),
        chat_pb2.ChatMessage(role="tool", tool_call_id=calls[1].id, content="noon"),
    ]
    _, answer = await run_generation(make(fake), request(history, options))
    sent = fake.state.requests[-1]
    model_turn, results_turn = sent["contents"][1], sent["contents"][2]
    assert model_turn["role"] == "model"
    assert [p["functionCall"]["name"] for p in model_turn["parts"]] == ["get_weather", "get_time"]
    assert model_turn["parts"][0]["functionCall"]["args"] == {"city": "x", "days": 1}
    # Gemini 3's thought signature came back with the call that carried it.
    assert fake.state.signatures[-1] == signature_of("get_weather")
    assert results_turn["role"] == "user"
    responses = [p["functionResponse"] for p in results_turn["parts"]]
    assert [(r["name"], r["response"]) for r in responses] == [
        ("get_weather", {"sky": "sunny"}),
        ("get_time", {"result": "noon"}),
    ]
    assert answer.text() == 'results: {"sky":"sunny"}; {"result":"noon"}'
    assert answer.finish_reason() == chat_pb2.FINISH_REASON_STOP


BOTH = ["get_weather", "get_time"]


def mode(value: chat_pb2.ToolChoiceMode.ValueType) -> chat_pb2.ToolChoice:
    return chat_pb2.ToolChoice(mode=value)


@pytest.mark.parametrize(
    ("choice", "strict", "config", "called"),
    [
        (
            chat_pb2.ToolChoice(function_name="get_time"),
            False,
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
            ["get_time"],
        ),
        (
            chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED),
            False,
            {"mode": "ANY"},
            BOTH,
        ),
        (chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_NONE), False, {"mode": "NONE"}, []),
        # Strict tools ask for schema-adherent arguments: Gemini's VALIDATED mode.
        (None, True, {"mode": "VALIDATED"}, BOTH),
    ],
)
async def test_tool_choice_becomes_the_function_calling_config(
    fake: GeminiFake,
    choice: chat_pb2.ToolChoice | None,
    strict: bool,
    config: dict[str, Any],
    called: list[str],
) -> None:
    options = chat_pb2.ChatOptions(
        tools=[tool("get_weather", {}, strict), TIME], tool_choice=choice
    )
    _, merged = await run_generation(make(fake), request(options=options))
    assert fake.state.requests[-1]["toolConfig"]["functionCallingConfig"] == config
    assert [c.function.name for c in merged.choices()[0].message.tool_calls] == called


async def test_structured_output_validates(fake: GeminiFake) -> None:
    schema = struct_pb2.Struct()
    schema.update(Weather.model_json_schema())
    options = chat_pb2.ChatOptions(
        response_format=chat_pb2.ResponseFormat(
            type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=chat_pb2.JsonSchema(name="weather", schema=schema),
        )
    )
    _, merged = await run_generation(make(fake), request(options=options))
    config = fake.state.requests[-1]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == ["city", "celsius", "sunny"]
    assert Weather.model_validate_json(merged.text()) == Weather(city="x", celsius=1, sunny=True)


async def test_thoughts_are_reasoning_deltas_and_tokens(fake: GeminiFake) -> None:
    options = chat_pb2.ChatOptions(reasoning_effort=chat_pb2.REASONING_EFFORT_MEDIUM)
    events, merged = await run_generation(make(fake), request(options=options, max_tokens=2))
    thinking = camel_keys(fake.state.requests[-1]["generationConfig"]["thinkingConfig"])
    assert thinking == {"thinkingBudget": 8192, "includeThoughts": True}
    assert events[0].reasoning == "think0 " and events[0].model == "ok"
    [choice] = merged.choices()
    assert choice.message.reasoning_content == "think0 think1 think2 "
    assert choice.message.content == "w0 w1"
    assert events[-1].usage.reasoning_tokens == 3
    assert events[-1].usage.completion_tokens == 5


async def test_gemini_params_and_effort_none(fake: GeminiFake) -> None:
    options = chat_pb2.ChatOptions(
        reasoning_effort=chat_pb2.REASONING_EFFORT_NONE,
        gemini=chat_pb2.GeminiParams(top_k=7),
    )
    await run_generation(make(fake), request(options=options))
    config = fake.state.requests[-1]["generationConfig"]
    assert camel_keys(config["thinkingConfig"]) == {"thinkingBudget": 0, "includeThoughts": False}
    assert config["topK"] == 7


async def test_candidates_and_logprobs(fake: GeminiFake) -> None:
    _, merged = await run_generation(
        make(fake), request(n=2, logprobs=True, top_logprobs=2, max_tokens=2)
    )
    config = fake.state.requests[-1]["generationConfig"]
    assert (config["candidateCount"], config["responseLogprobs"], config["logprobs"]) == (
        2,
        True,
        2,
    )
    first, second = merged.choices()
    assert (first.message.content, second.message.content) == ("w0 w1", "c1w0c1 w1")
    assert [t.token for t in first.logprobs.content] == ["w0", " w1"]
    assert [t.token for t in first.logprobs.content[0].top_logprobs] == ["w0", "alt1"]
    assert first.finish_reason == second.finish_reason == chat_pb2.FINISH_REASON_LENGTH


async def test_inline_image_goes_as_inline_data(fake: GeminiFake) -> None:
    image = chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url="data:image/jpeg;base64,AAEC"))
    message = chat_pb2.ChatMessage(role="user", parts=[chat_pb2.ContentPart(text="what?"), image])
    await run_generation(make(fake), request([message]))
    parts = fake.state.requests[-1]["contents"][0]["parts"]
    assert camel_keys(parts[1]) == {"inlineData": {"mimeType": "image/jpeg", "data": "AAEC"}}


async def test_refuses_what_gemini_cannot_do_by_name(fake: GeminiFake) -> None:
    calls = len(fake.state.requests)
    options = chat_pb2.ChatOptions(
        tools=[TIME], parallel_tool_calls=False, service_tier="flex", user="u"
    )
    options.vllm.min_p = 0.1
    options.extra_body.update({"safety": "off"})
    image = chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url="https://example.com/cat.png"))
    messages = [
        chat_pb2.ChatMessage(role="user", parts=[image]),
        chat_pb2.ChatMessage(role="tool", tool_call_id="nope", content="x"),
    ]
    with pytest.raises(ServiceError) as caught:
        await run_generation(make(fake), request(messages, options, logit_bias={1: 5.0}))
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "unsupported_parameter"
    assert [v.field for v in error.violations] == [
        "messages[0].content[0]",
        "messages[1].tool_call_id",
        "logit_bias",
        "parallel_tool_calls",
        "service_tier",
        "user",
        "min_p",
        "safety",
    ]
    assert len(fake.state.requests) == calls


async def test_context_overflow_is_context_length_exceeded(fake: GeminiFake) -> None:
    with pytest.raises(ServiceError) as caught:
        await run_generation(make(fake, model="context-overflow"), request())
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "context_length_exceeded"
    assert caught.value.param == "messages"
