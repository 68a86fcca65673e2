"""The whole chat surface through Envoy, gateway, router and the sim provider, as the official
`openai` SDK (unmodified) and the typed gRPC / HTTP-JSON clients see it: tool-calling loops,
structured output, logprobs, several choices, images, reasoning — and 400s naming the field
for everything a model cannot honour or a client got wrong."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import orjson
import pytest
from google.protobuf import json_format
from pydantic import BaseModel

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.records import get_record

EVERYTHING = {
    "tools": True,
    "structured_output": True,
    "json_mode": True,
    "reasoning": True,
    "logprobs": True,
    "multiple_choices": True,
    "input_modalities": ["text", "image", "audio", "file"],
    "max_output_tokens": 100,
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "days"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
        },
    },
]
ASK = [{"role": "user", "content": "Weather and time in Paris?"}]
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp("chat")
    config = mesh_config(tmp)
    config["models"] = [
        {"name": "hi-sim", "endpoints": ["sim-a"], "capabilities": EVERYTHING},
        # Declares nothing: text in, text out, one choice.
        {"name": "hi-text", "endpoints": ["sim-slow"]},
    ]
    with running_mesh(tmp, config) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def stub(mesh: Mesh) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(mesh.envoy_grpc))


def _completions(client: openai.OpenAI) -> Any:
    """The SDK's chat completions resource, untyped: the tests pass plain dicts and lists, which
    the SDK's TypedDict overloads would make every call spell out."""
    return client.chat.completions


def _tool_results(calls: list[Any]) -> list[dict[str, Any]]:
    return [
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"ok": call.function.name})}
        for call in calls
    ]


def test_tool_calling_loop_with_parallel_calls(client: openai.OpenAI) -> None:
    first = _completions(client).create(model="hi-sim", messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    weather = json.loads(calls[0].function.arguments)
    assert isinstance(weather["city"], str) and 1 <= weather["days"] <= 7
    assert len({c.id for c in calls}) == 2
    history = [*ASK, choice.message.model_dump(exclude_none=True), *_tool_results(calls)]
    final = _completions(client).create(model="hi-sim", messages=history, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_tool_calling_loop_streamed(client: openai.OpenAI) -> None:
    stream = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        tools=TOOLS,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert all(isinstance(json.loads(c["arguments"]), dict) for c in calls.values())
    # The streamed calls equal the whole reply's (the sim is deterministic).
    whole = _completions(client).create(model="hi-sim", messages=ASK, tools=TOOLS)
    assert [c.function.arguments for c in whole.choices[0].message.tool_calls or []] == [
        calls[i]["arguments"] for i in sorted(calls)
    ]
    assistant = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls.values()
        ],
    }
    results = [
        {"role": "tool", "tool_call_id": c["id"], "content": "sunny"} for c in calls.values()
    ]
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in _completions(client).create(
            model="hi-sim",
            messages=[*ASK, assistant, *results],
            tools=TOOLS,
            stream=True,
        )
        if chunk.choices
    )
    assert text


def test_named_tool_choice_and_no_parallel_calls(client: openai.OpenAI) -> None:
    named = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["get_time"]
    single = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        tools=TOOLS,
        parallel_tool_calls=False,
    )
    assert len(single.choices[0].message.tool_calls or []) == 1
    none = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
    )
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content


class Forecast(BaseModel):
    city: str
    days: int
    rain: bool
    temperatures: list[float]


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = _completions(client).parse(
        model="hi-sim",
        messages=ASK,
        response_format=Forecast,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and parsed.temperatures
    json_object = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(json_object.choices[0].message.content or ""), dict)


def test_logprobs(client: openai.OpenAI) -> None:
    reply = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        logprobs=True,
        top_logprobs=2,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    streamed = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    tokens = [
        t.token
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content or []
    ]
    assert "".join(tokens) == choice.message.content


def test_two_choices(client: openai.OpenAI) -> None:
    reply = _completions(client).create(model="hi-sim", messages=ASK, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    first, second = (c.message.content for c in reply.choices)
    assert first and second and first != second
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    for chunk in _completions(client).create(
        model="hi-sim",
        messages=ASK,
        n=2,
        stream=True,
    ):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: first, 1: second}
    assert finishes == {0: "stop", 1: "stop"}


def test_image_part(client: openai.OpenAI) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"},
                },
            ],
        }
    ]
    reply = _completions(client).create(model="hi-sim", messages=messages)
    assert reply.choices[0].message.content
    # The sim prices an image at 85 prompt tokens: the part reached it.
    assert reply.usage is not None and reply.usage.prompt_tokens >= 85


def test_reasoning_deltas_and_tokens(client: openai.OpenAI) -> None:
    stream = _completions(client).create(
        model="hi-sim",
        messages=ASK,
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning = content = ""
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    assert len(reasoning.split()) == 4 and content
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 4
    whole = _completions(client).create(model="hi-sim", messages=ASK, reasoning_effort="low")
    assert (whole.choices[0].message.model_extra or {}).get("reasoning_content") == reasoning


def test_models_show_capabilities(mesh: Mesh) -> None:
    listing = httpx.get(f"{mesh.http_url}/v1/models", timeout=10).json()
    caps = {m["id"]: m["capabilities"] for m in listing["data"]}
    assert caps["hi-sim"]["tools"] is True and caps["hi-sim"]["max_output_tokens"] == 100
    assert caps["hi-text"]["tools"] is False and caps["hi-text"]["input_modalities"] == ["text"]


def _post(mesh: Mesh, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{mesh.http_url}/v1/chat/completions", json=body, timeout=10)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"tools": [{"type": "function"}]}, 400, "tools[0].function", None),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            400,
            "tools[0].function.name",
            None,
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "banana"}},
                    }
                ]
            },
            400,
            "tools[0].function.parameters.type",
            None,
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"properties": {"a": 5}}},
                }
            },
            400,
            "response_format.json_schema.schema.properties.a",
            None,
        ),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]},
            400,
            "messages[1].tool_call_id",
            None,
        ),
        ({"tool_choice": "required"}, 400, "tool_choice", None),
        ({"model": "hi-text", "tools": TOOLS}, 400, "tools", "unsupported_parameter"),
        ({"model": "hi-text", "n": 2}, 400, "n", "unsupported_parameter"),
        ({"model": "hi-text", "logprobs": True}, 400, "logprobs", "unsupported_parameter"),
        (
            {"model": "hi-text", "reasoning_effort": "high"},
            400,
            "reasoning_effort",
            "unsupported_parameter",
        ),
        (
            {"model": "hi-text", "response_format": {"type": "json_object"}},
            400,
            "response_format",
            "unsupported_parameter",
        ),
        (
            {
                "model": "hi-text",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ],
            },
            400,
            "messages[0].content[0]",
            "unsupported_parameter",
        ),
        ({"frobnicate": 1}, 400, "frobnicate", "unknown_parameter"),
        ({"top_k": 5}, 400, "vllm", "unsupported_parameter"),
        ({"max_tokens": 101}, 400, "max_tokens", None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    mesh: Mesh, body: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    reply = _post(mesh, {"model": "hi-sim", "messages": ASK, **body})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code
    assert error["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_naming_it(mesh: Mesh) -> None:
    huge = "x" * (16 << 20)
    reply = _post(mesh, {"model": "hi-sim", "messages": [{"role": "user", "content": huge}]})
    assert reply.status_code == 413
    assert "gateway.max_body_bytes" in reply.json()["error"]["message"]


def _typed_tools() -> list[chat_pb2.Tool]:
    tools = []
    for tool in TOOLS:
        message = chat_pb2.Tool()
        json_format.ParseDict(tool, message)
        tools.append(message)
    return tools


def test_typed_grpc_tools_round_trip(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    options = chat_pb2.ChatOptions(tools=_typed_tools())
    messages = [chat_pb2.ChatMessage(role="user", content="Weather and time in Paris?")]
    reply = stub.Chat(
        gateway_pb2.ChatRequest(model="hi-sim", messages=messages, options=options), timeout=10
    )
    assert reply.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    calls = list(reply.choices[0].message.tool_calls)
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    events = list(
        stub.ChatStream(
            gateway_pb2.ChatStreamRequest(model="hi-sim", messages=messages, options=options),
            timeout=10,
        )
    )
    names = [f.name for e in events for f in e.tool_calls if f.name]
    assert names == ["get_weather", "get_time"]
    arguments = "".join(f.arguments for e in events for f in e.tool_calls if f.index == 0)
    assert arguments == calls[0].function.arguments
    assert sum(1 for e in events if e.finish_reason) == 1
    # The conversation goes on with the tool results.
    history = [
        *messages,
        reply.choices[0].message,
        *(chat_pb2.ChatMessage(role="tool", tool_call_id=c.id, content="sunny") for c in calls),
    ]
    final = stub.Chat(
        gateway_pb2.ChatRequest(model="hi-sim", messages=history, options=options), timeout=10
    )
    assert final.finish_reason == chat_pb2.FINISH_REASON_STOP and final.content


def test_typed_grpc_unsupported_names_the_typed_field(
    stub: gateway_pb2_grpc.GatewayServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Chat(
            gateway_pb2.ChatRequest(
                model="hi-text",
                messages=[chat_pb2.ChatMessage(role="user", content="x")],
                options=chat_pb2.ChatOptions(tools=_typed_tools()),
            ),
            timeout=10,
        )
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "options.tools" in error.details()


def test_typed_http_json_tools(mesh: Mesh) -> None:
    reply = httpx.post(
        f"{mesh.http_url}/api/v1/chat",
        content=orjson.dumps({"model": "hi-sim", "messages": ASK, "options": {"tools": TOOLS}}),
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # Field names as in the protos (Envoy preserves them).
    assert body["finish_reason"] == "FINISH_REASON_TOOL_CALLS"
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert isinstance(json.loads(calls[0]["function"]["arguments"]), dict)


def test_record_keeps_tools_finish_reason_and_reasoning(mesh: Mesh, client: openai.OpenAI) -> None:
    reply = _completions(client).create(
        model="hi-sim", messages=ASK, tools=TOOLS, reasoning_effort="medium"
    )
    request_id = reply.id.removeprefix("chatcmpl-")
    record = poll(lambda: get_record(mesh, request_id), 10.0, "the request record")
    assert list(record.tools_offered) == ["get_weather", "get_time"]
    assert list(record.tools_called) == ["get_weather", "get_time"]
    assert set(record.features) == {"tools", "reasoning"}
    assert record.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert (
        record.usage.reasoning_tokens == 8 == reply.usage.completion_tokens_details.reasoning_tokens
    )
    # Reasoning tokens are completion tokens, priced as such (2 USD per 1M on sim-a).
    assert record.usage.completion_tokens == reply.usage.completion_tokens > 8
    expected = (reply.usage.prompt_tokens * 1.0 + reply.usage.completion_tokens * 2.0) / 1e6
    assert record.cost_usd == pytest.approx(expected)


def test_typed_http_json_stream_tool_calls(mesh: Mesh) -> None:
    with httpx.stream(
        "POST",
        f"{mesh.http_url}/api/v1/chat:stream",
        content=orjson.dumps({"model": "hi-sim", "messages": ASK, "options": {"tools": TOOLS}}),
        timeout=10,
    ) as reply:
        assert reply.status_code == 200
        events = [
            orjson.loads(line[len("data: ") :])
            for line in reply.iter_lines()
            if line.startswith("data: ")
        ]
    names = [c["name"] for e in events for c in e.get("tool_calls", []) if c.get("name")]
    assert names == ["get_weather", "get_time"]
    arguments = "".join(
        c.get("arguments", "")
        for e in events
        for c in e.get("tool_calls", [])
        if not c.get("index")
    )
    assert isinstance(json.loads(arguments), dict)
    # Envoy prints default values too: UNSPECIFIED on events that end nothing.
    finishes = [e["finish_reason"] for e in events]
    assert [f for f in finishes if f != "FINISH_REASON_UNSPECIFIED"] == ["FINISH_REASON_TOOL_CALLS"]
