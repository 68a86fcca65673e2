"""The chat surface through Envoy, gateway, router and the real provider adapters against the
OpenAI and Gemini fakes (the official `openai` SDK as the client; the adapters' own official
SDKs, `openai` and `google-genai`, towards the fakes): tool-calling loops with parallel calls
streamed and not, `parse()` with a pydantic model, reasoning, logprobs with n = 2, and an
upstream's context-length error keeping its meaning."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from support.fakes.gemini_api import GeminiFake
from support.fakes.openai_api import OpenAIFake
from support.mesh import Mesh, mesh_config, running_mesh
from support.procs import free_port

CAPABILITIES = {
    "tools": True,
    "structured_output": True,
    "json_mode": True,
    "reasoning": True,
    "logprobs": True,
    "multiple_choices": True,
    "max_output_tokens": 64,
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ASK = [{"role": "user", "content": "Weather and time in Paris?"}]
MODELS = ["hi-openai", "hi-gemini"]


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    openai_fake = OpenAIFake().start()
    gemini_fake = GeminiFake().start()
    # The workers read their keys from the environment the launcher passes on.
    os.environ["HI_TEST_OPENAI_KEY"] = "sk-e2e-fake"
    os.environ["HI_TEST_GEMINI_KEY"] = "AIza-e2e-fake"
    tmp: Path = tmp_path_factory.mktemp("chat-upstreams")
    config = mesh_config(tmp)

    def worker(kind: str, url: str, key: str) -> dict[str, Any]:
        def endpoint(suffix: str, model: str) -> dict[str, Any]:
            return {"id": f"{kind}-{suffix}", "model": model, "base_url": url, "api_key_env": key}

        return {
            "name": f"{kind}-fake",
            "kind": kind,
            "port": free_port(),
            "endpoints": [endpoint("ok", "ok"), endpoint("overflow", "context-overflow")],
        }

    config["providers"] += [
        worker("openai", openai_fake.base_url, "HI_TEST_OPENAI_KEY"),
        worker("gemini", gemini_fake.url, "HI_TEST_GEMINI_KEY"),
    ]
    config["models"] = [
        {
            "name": f"hi-{kind}{suffix}",
            "endpoints": [f"{kind}-{endpoint}"],
            "capabilities": CAPABILITIES,
        }
        for kind in ("openai", "gemini")
        for suffix, endpoint in (("", "ok"), ("-overflow", "overflow"))
    ]
    try:
        with running_mesh(tmp, config) as running:
            yield running
    finally:
        openai_fake.stop()
        gemini_fake.stop()


def completions(mesh: Mesh) -> Any:
    # Typed loosely: the SDK's overloads cannot see through the keyword dicts below.
    client: Any = openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)
    return client.chat.completions


def calls_of_stream(stream: Any) -> tuple[list[dict[str, str]], str | None]:
    """Tool calls rebuilt from streamed deltas the way OpenAI's docs do, and the finish."""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_loop_with_parallel_calls(mesh: Mesh, model: str, stream: bool) -> None:
    api = completions(mesh)
    if stream:
        calls, finish = calls_of_stream(
            api.create(model=model, messages=ASK, tools=TOOLS, stream=True)
        )
    else:
        choice = api.create(model=model, messages=ASK, tools=TOOLS).choices[0]
        finish = choice.finish_reason
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls
        ]
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "x", "days": 1}
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"},
    ]
    answer = api.create(model=model, messages=history, tools=TOOLS).choices[0]
    assert answer.finish_reason == "stop"
    assert answer.message.content.startswith("results: ")


@pytest.mark.parametrize("model", MODELS)
def test_parse_with_a_pydantic_model(mesh: Mesh, model: str) -> None:
    completion = completions(mesh).parse(model=model, messages=ASK, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(city="x", celsius=1, sunny=True)


@pytest.mark.parametrize("model", MODELS)
def test_reasoning_content_and_tokens(mesh: Mesh, model: str) -> None:
    reply = completions(mesh).create(
        model=model, messages=ASK, reasoning_effort="high", max_tokens=2
    )
    message = reply.choices[0].message
    assert message.content == "w0 w1"
    assert getattr(message, "reasoning_content", None) == "think0 think1 think2 "
    assert reply.usage.completion_tokens_details.reasoning_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_logprobs_with_two_choices(mesh: Mesh, model: str) -> None:
    reply = completions(mesh).create(
        model=model, messages=ASK, n=2, logprobs=True, top_logprobs=2, max_tokens=2
    )
    assert [c.message.content for c in reply.choices] == ["w0 w1", "c1w0c1 w1"]
    first = reply.choices[0].logprobs.content
    assert [t.token for t in first] == ["w0", " w1"]
    assert [t.token for t in first[0].top_logprobs] == ["w0", "alt1"]


@pytest.mark.parametrize("model", MODELS)
def test_context_overflow_is_a_400_with_its_code(mesh: Mesh, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        completions(mesh).create(model=f"{model}-overflow", messages=ASK)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    # Neither the endpoint id nor the fake's address reaches the client.
    message = str(caught.value.message)
    assert "-overflow" not in message and "127.0.0.1" not in message
