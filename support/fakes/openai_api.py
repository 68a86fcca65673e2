"""A fake of OpenAI's chat-completions REST API, faithful on the wire: the real ``openai`` SDK and
the raw-HTTP adapters talk to it unmodified (base URL ``{url}/v1``).

Streams are ``data: {chat.completion.chunk}\\n\\n`` frames: a first chunk with the role, one chunk
per token, a chunk with ``finish_reason``, a usage chunk with empty ``choices`` when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Errors are OpenAI's error JSON.

The requested ``model`` picks a behaviour, so one fake serves every test:
  * ``ok`` (or anything else): ``max_tokens`` tokens (default 5) ``w0 w1 ...``, 1 ms apart;
  * ``status-429`` / ``status-401`` / ``status-500``: that status (429 with ``Retry-After: 7``);
  * ``slow-first``: headers after 5 s (first-token timeout);
  * ``stall``: one token, then silence (idle timeout);
  * ``malformed``: one token, then a chunk that is not JSON;
  * ``disconnect``: two tokens, then the connection is cut without ``[DONE]``;
  * ``long``: 2000 tokens 20 ms apart (cancellation); ``paced``: 0.2 ms apart (benchmarks).
Per-key behaviour: ``reject_keys[key] = status`` answers that key with 401 or 429.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from support.fakes.server import ThreadedServer


@dataclass
class OpenAIFakeState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    # Streams whose client went away before the end (the handler was cancelled).
    disconnects: int = 0
    completed: int = 0
    reject_keys: dict[str, int] = field(default_factory=dict)
    retry_after: str = "7"


def tokens_for(body: dict[str, Any]) -> list[str]:
    count = int(body.get("max_completion_tokens") or body.get("max_tokens") or 5)
    return [f"w{i}" if i == 0 else f" w{i}" for i in range(count)]


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) + 1 for m in body.get("messages", []))


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    kind = {401: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class OpenAIFake:
    def __init__(self) -> None:
        self.state = OpenAIFakeState()
        self._server = ThreadedServer(self._app)

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def start(self) -> OpenAIFake:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        auth = request.headers.get("Authorization", "")
        state.auth_headers.append(auth)
        state.request_ids.append(request.headers.get("X-Request-Id", ""))
        body = await request.json()
        state.requests.append(body)
        key = auth.removeprefix("Bearer ")
        if key in state.reject_keys:
            status = state.reject_keys[key]
            headers = {"Retry-After": state.retry_after} if status == 429 else None
            return error_response(status, "rejected key sk-...redacted", headers)
        model = str(body.get("model", ""))
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            headers = {"Retry-After": state.retry_after} if status == 429 else None
            return error_response(status, f"simulated {status}", headers)
        if model == "slow-first":
            await asyncio.sleep(5)
        if not body.get("stream"):
            return self._whole(body)
        return await self._stream(request, body, model)

    def _whole(self, body: dict[str, Any]) -> web.Response:
        tokens = tokens_for(body)
        prompt = prompt_tokens(body)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": "length" if body.get("max_tokens") else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt + len(tokens),
                },
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        state = self.state
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        tokens = tokens_for(body)
        gap = 0.001
        if model == "long":
            tokens = [f" w{i}" for i in range(2000)]
            gap = 0.02
        if model == "paced":
            # Benchmarks: chunks arrive in separate reads, as from a generating engine.
            gap = 0.0002
        try:
            await response.write(
                _frame(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
            for index, token in enumerate(tokens):
                if model == "stall" and index == 1:
                    await asyncio.sleep(3600)
                if model == "malformed" and index == 1:
                    await response.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
                    await asyncio.sleep(3600)
                if model == "disconnect" and index == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(
                    _frame(
                        {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": token}, "finish_reason": None}
                            ],
                        }
                    )
                )
                await asyncio.sleep(gap)
            limited = bool(body.get("max_tokens") or body.get("max_completion_tokens"))
            await response.write(
                _frame(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {},
                                "finish_reason": "length" if limited else "stop",
                            }
                        ],
                    }
                )
            )
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt = prompt_tokens(body)
                await response.write(
                    _frame(
                        {
                            **base,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt,
                                "completion_tokens": len(tokens),
                                "total_tokens": prompt + len(tokens),
                                "prompt_tokens_details": {"cached_tokens": 2},
                            },
                        }
                    )
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            state.completed += 1
        except (asyncio.CancelledError, ConnectionResetError):
            state.disconnects += 1
            raise
        return response
