"""A fake of the Gemini API (``generativelanguage`` v1 and v1beta REST), faithful on the wire:
the real ``google-genai`` SDK talks to it unmodified (``HttpOptions(base_url=fake.url)``).

``POST /v1/models/{model}:streamGenerateContent?alt=sse`` answers ``data: {json}\\r\\n\\r\\n``
frames (GenerateContentResponse in camelCase, usage metadata on every frame, finishReason on
the last); ``:generateContent`` answers one JSON object. Errors are Google's error JSON
(``{"error": {"code", "message", "status"}}``). The key comes in ``x-goog-api-key``.

The model name picks a behaviour, as in the OpenAI fake: ``ok``, ``status-429`` (Retry-After 7),
``status-401``, ``status-500``, ``slow-first``, ``stall``, ``malformed``, ``disconnect``,
``long``, ``paced``, ``safety`` (finishReason SAFETY); ``reject_keys[key] = status`` per key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from support.fakes.server import ThreadedServer

_STATUS_NAMES = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


@dataclass
class GeminiFakeState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    disconnects: int = 0
    completed: int = 0
    reject_keys: dict[str, int] = field(default_factory=dict)


def error_response(status: int, message: str) -> web.Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
    headers = {"Retry-After": "7"} if status == 429 else None
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            words += len(str(part.get("text", "")).split()) + 1
    system = body.get("systemInstruction") or {}
    for part in system.get("parts", []):
        words += len(str(part.get("text", "")).split()) + 1
    return words


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class GeminiFake:
    def __init__(self) -> None:
        self.state = GeminiFakeState()
        self._server = ThreadedServer(self._app)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> GeminiFake:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        # The SDK's default API version is v1; v1beta is what older SDKs and curl examples use.
        app.router.add_post("/v1/models/{target}", self._models_call)
        app.router.add_post("/v1beta/models/{target}", self._models_call)
        return app

    async def _models_call(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        model, _, method = request.match_info["target"].partition(":")
        key = request.headers.get("x-goog-api-key", "")
        state.keys.append(key)
        body = await request.json()
        state.requests.append(body)
        if key in state.reject_keys:
            return error_response(
                state.reject_keys[key], "API key not valid. Please pass a valid key."
            )
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            return error_response(status, f"simulated {status}")
        if model == "slow-first":
            await asyncio.sleep(5)
        config = body.get("generationConfig") or {}
        count = int(config.get("maxOutputTokens") or 5)
        tokens = [f"w{i}" if i == 0 else f" w{i}" for i in range(count)]
        gap = 0.001
        if model == "long":
            tokens, gap = [f" w{i}" for i in range(2000)], 0.02
        if model == "paced":
            # Benchmarks: chunks arrive in separate reads, as from a generating engine.
            gap = 0.0002
        finish = "MAX_TOKENS" if config.get("maxOutputTokens") else "STOP"
        if model == "safety":
            finish = "SAFETY"
        prompt = _prompt_tokens(body)
        if method == "generateContent":
            return web.json_response(self._response("".join(tokens), prompt, len(tokens), finish))
        if method != "streamGenerateContent":
            return error_response(404, f"unknown method {method}")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index, token in enumerate(tokens):
                if model == "stall" and index == 1:
                    await asyncio.sleep(3600)
                if model == "malformed" and index == 1:
                    await response.write(b'data: {"candidates": [\r\n\r\n')
                    await asyncio.sleep(3600)
                if model == "disconnect" and index == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                last = index == len(tokens) - 1
                await response.write(
                    _frame(self._response(token, prompt, index + 1, finish if last else None))
                )
                await asyncio.sleep(gap)
            await response.write_eof()
            state.completed += 1
        except (asyncio.CancelledError, ConnectionResetError):
            state.disconnects += 1
            raise
        return response

    @staticmethod
    def _response(text: str, prompt: int, generated: int, finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": generated,
                "totalTokenCount": prompt + generated,
                "cachedContentTokenCount": 1,
            },
            "modelVersion": "fake-gemini",
            "responseId": "fake-response",
        }
