"""Adapter overhead on the hot path: CPU µs per request and per streamed chunk, per adapter.

The fake upstream runs in its own process, so this process's CPU time (``time.process_time``)
is the adapter's own cost: building the request, the HTTP client, SSE parsing, chunk decoding,
one protobuf event per chunk. Requests run one after another (concurrency 1) against the fake's
``paced`` model (chunks 0.2 ms apart, so each arrives in its own read, as from an engine).

    per request = CPU of N one-chunk requests / N
    per chunk   = (CPU of N long requests - CPU of N one-chunk requests) / (N * (chunks - 1))

    .venv/bin/python bench/adapters.py [--requests 200] [--chunks 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hybridinference.common.settings import ProviderEndpointSettings  # noqa: E402
from hybridinference.common.v1 import chat_pb2  # noqa: E402
from hybridinference.provider.v1 import provider_pb2  # noqa: E402
from hybridinference.providers.adapter import ProviderAdapter, build_adapter  # noqa: E402
from hybridinference.providers.openai_wire import StreamAssembler  # noqa: E402
from hybridinference.providers.sse import SseParser  # noqa: E402


class BareAiohttpReader:
    """Baseline: the same HTTP request with aiohttp, reading the body and doing nothing else.

    Its per-chunk cost is the event loop and socket work every adapter pays for a chunk that
    arrives in its own read; the adapters' numbers minus this is their own code.
    """

    def __init__(self, base_url: str) -> None:
        self._url = f"{base_url}/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncIterator[provider_pb2.GenerateResponse]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = orjson.dumps(
            {"model": "paced", "stream": True, "max_tokens": request.sampling.max_tokens}
        )
        async with self._session.post(self._url, data=body) as response:
            while chunk := await response.content.readany():
                # One event per SSE frame in the read, so "received" counts like an adapter's.
                for _ in range(chunk.count(b"w")):
                    yield provider_pb2.GenerateResponse(delta="w")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def start_fake(kind: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.fakes.serve", kind],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def request(chunks: int) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="bench",
        endpoint="bench",
        messages=[chat_pb2.ChatMessage(role="user", content="hello benchmark")],
        sampling=chat_pb2.SamplingParams(max_tokens=chunks),
    )


async def run(
    adapter: ProviderAdapter | BareAiohttpReader, requests: int, chunks: int
) -> tuple[float, int]:
    """CPU seconds for ``requests`` sequential generations and the content chunks received."""
    received = 0
    req = request(chunks)
    # Warm-up: connection pool, SDK imports and lazy clients.
    for _ in range(5):
        async for _event in adapter.generate(req):
            pass
    start = time.process_time()
    for _ in range(requests):
        async for event in adapter.generate(req):
            # Tokens, not events: chunks that share a network read leave as one event.
            received += event.delta.count("w")
    return time.process_time() - start, received


async def measure(kind: str, base_url: str, requests: int, chunks: int) -> tuple[float, float]:
    os.environ["BENCH_KEY"] = "sk-bench"
    settings = ProviderEndpointSettings(
        id="bench", model="paced", base_url=base_url, api_key_env="BENCH_KEY"
    )
    adapter = BareAiohttpReader(base_url) if kind == "baseline" else build_adapter(kind, settings)
    try:
        one_cpu, _ = await run(adapter, requests, 1)
        long_cpu, received = await run(adapter, requests, chunks)
    finally:
        await adapter.close()
    assert received == requests * chunks, (received, requests * chunks)
    per_request_us = one_cpu / requests * 1e6
    per_chunk_us = (long_cpu - one_cpu) / (requests * (chunks - 1)) * 1e6
    return per_request_us, per_chunk_us


_TEXT_DELTA = b'{"content":" w%d"}'
# One fragment of a streamed tool call's arguments, as vLLM and OpenAI send them.
_TOOL_DELTA = b'{"tool_calls":[{"index":0,"function":{"arguments":"\\"k%d\\": 1, "}}]}'


def parse_path_us(chunks: int = 64, rounds: int = 2000, delta: bytes = _TEXT_DELTA) -> float:
    """CPU µs per chunk of the vllm adapter's own per-chunk work with no I/O: SSE framing,
    orjson, the chunk → event translation (one vLLM-shaped chunk per network read)."""
    frames = [
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":' + delta % i + b',"logprobs":null,'
        b'"finish_reason":null,"token_ids":null}]}\n\n'
        for i in range(chunks)
    ]
    start = time.process_time()
    for _ in range(rounds):
        parser = SseParser()
        assembler = StreamAssembler("m")
        for frame in frames:
            events: list[provider_pb2.GenerateResponse] = []
            for payload in parser.feed(frame):
                assembler.chunk(orjson.loads(payload), events)
    return (time.process_time() - start) / (rounds * chunks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    text_us, tool_us = parse_path_us(), parse_path_us(delta=_TOOL_DELTA)
    print(f"vllm adapter per-chunk code alone (SSE + orjson + event, no I/O): "
          f"{text_us:.1f} µs/chunk of text, "
          f"{tool_us:.1f} µs/chunk of tool-call arguments")  # fmt: skip
    fakes = {name: start_fake(name) for name in ("openai", "gemini")}
    try:
        print(f"{'adapter':<20} {'µs/request':>11} {'µs/chunk':>9}   ({args.requests} req x "
              f"{args.chunks} chunks, sequential, CPU time of this process)")  # fmt: skip
        for kind, fake in (
            ("baseline", "openai"),
            ("vllm", "openai"),
            ("openai_compatible", "openai"),
            ("openai", "openai"),
            ("gemini", "gemini"),
        ):
            per_request, per_chunk = asyncio.run(
                measure(kind, fakes[fake][1], args.requests, args.chunks)
            )
            print(f"{kind:<20} {per_request:>11.0f} {per_chunk:>9.1f}")
    finally:
        for proc, _ in fakes.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


if __name__ == "__main__":
    main()
