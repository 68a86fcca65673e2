"""A fast OpenAI-compatible upstream for benchmarks: vLLM's chat-completions wire format from a
bare asyncio protocol on uvloop, so the upstream costs far less CPU than the mesh it feeds.

    python -m bench.suite.fake_upstream [--port 0] [--tokens 20] [--ttft-ms 0] [--itl-ms 0]

Prints ``READY <port>`` once listening; serves until SIGTERM / SIGINT. HTTP/1.1 keep-alive only
(what aiohttp, wrk and Envoy send); no pipelining beyond one request at a time per connection.

- ``POST /v1/chat/completions``: ``max_tokens`` (else ``--tokens``) content chunks. Streaming
  (``"stream": true``) answers SSE chunks like vLLM's (role chunk, one chunk per token, a finish
  chunk, a usage chunk when ``stream_options.include_usage``, ``[DONE]``), with the first token
  after ``--ttft-ms`` and the next ones ``--itl-ms`` apart; each chunk is its own write, so with a
  delay every token reaches the client in its own network read. Non-streaming answers one
  ``chat.completion`` object after ttft + (tokens - 1) * itl.
- The request's ``model`` may override the timing: ``bench:ttft=5:itl=1`` (milliseconds), so one
  upstream serves a fast model and a paced one at once.
- ``GET /v1/models``, ``GET /metrics`` (the few vLLM gauges the vllm adapter's status reads),
  ``GET /health``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import cast

import orjson
import uvloop

MODEL = "bench-model"
_HEAD_END = b"\r\n\r\n"
_METRICS = b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"


class Behaviour:
    def __init__(self, tokens: int, ttft_ms: float, itl_ms: float) -> None:
        self.tokens = tokens
        self.ttft_s = ttft_ms / 1000
        self.itl_s = itl_ms / 1000
        self._by_model: dict[str, Behaviour] = {}

    def for_model(self, model: str) -> Behaviour:
        """``name:ttft=5:itl=1`` overrides the timing for that model (parsed once per name)."""
        if ":" not in model:
            return self
        known = self._by_model.get(model)
        if known is None:
            options = dict(part.split("=", 1) for part in model.split(":")[1:] if "=" in part)
            known = self._by_model[model] = Behaviour(
                self.tokens,
                float(options.get("ttft", self.ttft_s * 1000)),
                float(options.get("itl", self.itl_s * 1000)),
            )
        return known


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream:
    """The SSE frames of one streamed completion, pre-rendered around a per-request prefix."""

    def __init__(self, request_id: str, tokens: int, include_usage: bool, prompt: int) -> None:
        head = orjson.dumps(
            {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
             "model": MODEL}
        )[:-1]  # fmt: skip
        self._prefix = b"data: " + head + b',"choices":[{"index":0,"delta":'
        self.tokens = tokens
        self._usage = (
            b"data: " + head + b',"choices":[],"usage":'
            + orjson.dumps({"prompt_tokens": prompt, "completion_tokens": tokens,
                            "total_tokens": prompt + tokens})
            + b"}\n\n"
        ) if include_usage else b""  # fmt: skip

    def role(self) -> bytes:
        return self._prefix + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n'

    def token(self, index: int) -> bytes:
        text = b"w%d" % index if index == 0 else b" w%d" % index
        return self._prefix + b'{"content":"' + text + b'"},"finish_reason":null}]}\n\n'

    def end(self) -> bytes:
        finish = self._prefix + b'{},"finish_reason":"length"}]}\n\n'
        return finish + self._usage + b"data: [DONE]\n\n"


class HttpProtocol(asyncio.Protocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next()

    def _next(self) -> None:
        """Handles the next complete request in the buffer, if any."""
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return
        head = self._buffer[:end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        start = end + 4
        if len(self._buffer) < start + length:
            return
        body = self._buffer[start : start + length]
        self._buffer = self._buffer[start + length :]
        self._busy = True
        self._handle(method, path, body)

    def _done(self) -> None:
        self._busy = False
        self._task = None
        if self._buffer and self._transport is not None:
            self._next()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            request = orjson.loads(body)
            behaviour = self._behaviour.for_model(str(request.get("model", "")))
            tokens = int(request.get("max_tokens") or behaviour.tokens)
            prompt = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
            if request.get("stream"):
                options = request.get("stream_options") or {}
                stream = _Stream("chatcmpl-bench", tokens, bool(options.get("include_usage")),
                                 prompt)  # fmt: skip
                if behaviour.ttft_s == 0 and behaviour.itl_s == 0:
                    self._stream_now(stream)
                else:
                    self._task = asyncio.ensure_future(self._stream_paced(stream, behaviour))
                return
            delay = behaviour.ttft_s + max(tokens - 1, 0) * behaviour.itl_s
            reply = _response(b"200 OK", _completion(tokens, prompt))
            if delay:
                self._task = asyncio.ensure_future(self._later(delay, reply))
            else:
                self._write(reply)
                self._done()
            return
        if method == "GET" and path.endswith("/models"):
            self._write(_response(b"200 OK", orjson.dumps(
                {"object": "list", "data": [{"id": MODEL, "object": "model"}]})))  # fmt: skip
        elif method == "GET" and path == "/metrics":
            self._write(_response(b"200 OK", _METRICS, b"text/plain"))
        elif method == "GET" and path == "/health":
            self._write(_response(b"200 OK", b""))
        else:
            self._write(_response(b"404 Not Found", b'{"error":{"message":"not found"}}'))
        self._done()

    def _start_stream(self) -> None:
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

    def _stream_now(self, stream: _Stream) -> None:
        # No delays: every frame in one write, as an engine that already has the whole answer.
        self._start_stream()
        frames = [stream.role(), *(stream.token(i) for i in range(stream.tokens)), stream.end()]
        self._write(_chunked(b"".join(frames)) + b"0\r\n\r\n")
        self._done()

    async def _stream_paced(self, stream: _Stream, behaviour: Behaviour) -> None:
        self._start_stream()
        self._write(_chunked(stream.role()))
        if behaviour.ttft_s:
            await asyncio.sleep(behaviour.ttft_s)
        for index in range(stream.tokens):
            if index and behaviour.itl_s:
                await asyncio.sleep(behaviour.itl_s)
            self._write(_chunked(stream.token(index)))
        self._write(_chunked(stream.end()) + b"0\r\n\r\n")
        self._done()

    async def _later(self, delay_s: float, reply: bytes) -> None:
        await asyncio.sleep(delay_s)
        self._write(reply)
        self._done()


def _completion(tokens: int, prompt: int) -> bytes:
    text = "".join(f"w{i}" if i == 0 else f" w{i}" for i in range(tokens))
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
            },
        }
    )


async def serve(host: str, port: int, behaviour: Behaviour) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(behaviour), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20, help="chunks when max_tokens is unset")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, Behaviour(args.tokens, args.ttft_ms, args.itl_ms)))


if __name__ == "__main__":
    main()
