"""A fake of the Gemini API (``generativelanguage`` v1 and v1beta REST), faithful on the wire:
the real ``google-genai`` SDK talks to it unmodified (``HttpOptions(base_url=fake.url)``).

``POST /v1/models/{model}:streamGenerateContent?alt=sse`` answers ``data: {json}\\r\\n\\r\\n``
frames (GenerateContentResponse in camelCase, usage metadata on every frame, finishReason on
the last); ``:generateContent`` answers one JSON object. Errors are Google's error JSON
(``{"error": {"code", "message", "status"}}``). The key comes in ``x-goog-api-key``.

The model name picks a behaviour, as in the OpenAI fake: ``ok``, ``status-429`` (Retry-After 7),
``status-401``, ``status-500``, ``slow-first``, ``stall``, ``malformed``, ``disconnect``,
``long``, ``paced``, ``safety`` (finishReason SAFETY), ``context-overflow`` (Gemini's 400 for
too many input tokens), ``thinking-*`` (thoughts first); ``reject_keys[key] = status`` per key.

The chat surface as Gemini speaks it (replies decided in ``replies.py``, as for the OpenAI fake):
``tools[].functionDeclarations`` with ``toolConfig.functionCallingConfig`` (AUTO / ANY with
``allowedFunctionNames`` / NONE) give ``functionCall`` parts (whole, several in one chunk, the
first with a ``thoughtSignature`` as Gemini 3 sends it); trailing ``functionResponse`` parts get
a text answer; ``responseMimeType: application/json`` with ``responseJsonSchema`` answers JSON;
``thinkingConfig.includeThoughts`` streams ``thought: true`` parts and counts
``thoughtsTokenCount``; ``candidateCount`` answers several candidates; ``responseLogprobs``
adds ``logprobsResult``.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from support.fakes.replies import Ask, ChoicePlan, plan
from support.fakes.server import FakeApi

_STATUS_NAMES = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


@dataclass
class GeminiFakeState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    disconnects: int = 0
    completed: int = 0
    reject_keys: dict[str, int] = field(default_factory=dict)
    # Thought signatures that came back with function calls in later turns.
    signatures: list[bytes] = field(default_factory=list)


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


def signature_of(name: str) -> bytes:
    """The thought signature the fake gives its call of ``name`` (and expects back)."""
    return f"sig-{name}".encode()


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def camel_keys(value: Any) -> Any:
    """``value`` with every key in lowerCamel, for comparing what the SDK sent (not for schemas,
    whose property names are data)."""
    if isinstance(value, dict):
        return {_camel(key): camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def field_of(message: dict[str, Any], name: str, default: Any = None) -> Any:
    """A field by its lowerCamel JSON name or its proto name: Google's JSON parsing accepts both
    (and the SDK sends some nested fields, e.g. ``parameters_json_schema``, by the proto name)."""
    if name in message:
        return message[name]
    return message.get(_snake(name), default)


def ask_of(body: dict[str, Any], model: str) -> Ask:
    config = field_of(body, "generationConfig") or {}
    tools: dict[str, Any] = {}
    for tool in body.get("tools") or []:
        for declaration in field_of(tool, "functionDeclarations") or []:
            schema = field_of(declaration, "parametersJsonSchema") or declaration.get("parameters")
            tools[str(declaration["name"])] = schema or {}
    calling = field_of(field_of(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(calling.get("mode", "AUTO")).upper()
    allowed = field_of(calling, "allowedFunctionNames") or []
    choice = {"NONE": "none", "ANY": "required"}.get(mode, "auto")
    if mode == "ANY" and len(allowed) == 1:
        choice = str(allowed[0])
    results: list[str] = []
    contents = body.get("contents") or []
    if contents and contents[-1].get("parts"):
        last = contents[-1]["parts"]
        if all(field_of(part, "functionResponse") for part in last):
            results = [
                orjson.dumps(field_of(p, "functionResponse")["response"]).decode() for p in last
            ]
    thinking = field_of(config, "thinkingConfig") or {}
    mime = field_of(config, "responseMimeType")
    schema = field_of(config, "responseJsonSchema") or field_of(config, "responseSchema")
    limit = field_of(config, "maxOutputTokens")
    return Ask(
        max_tokens=int(limit) if limit else None,
        n=int(field_of(config, "candidateCount") or 1),
        reasoning=model.startswith("thinking") or bool(field_of(thinking, "includeThoughts")),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=True,
        tool_results=results,
        response_format=(
            ("json_schema" if schema else "json_object") if mime == "application/json" else "text"
        ),
        schema=schema,
    )


def _parts(choice: ChoicePlan) -> list[list[dict[str, Any]]]:
    """One candidate's stream: the parts of each chunk, in Gemini's order."""
    chunks: list[list[dict[str, Any]]] = [[{"text": p, "thought": True}] for p in choice.reasoning]
    chunks += [[{"text": piece}] for piece in choice.content]
    if choice.calls:
        calls = []
        for position, call in enumerate(choice.calls):
            part: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": orjson.loads(call.arguments)}
            }
            if position == 0:
                part["thoughtSignature"] = base64.b64encode(signature_of(call.name)).decode()
            calls.append(part)
        # Gemini sends a turn's calls whole, together.
        chunks.append(calls)
    return chunks


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class GeminiFake(FakeApi):
    def __init__(self) -> None:
        self.state = GeminiFakeState()
        super().__init__()

    @property
    def url(self) -> str:
        return self.server_url

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
        if model == "context-overflow":
            return error_response(
                400,
                "The input token count (1048577) exceeds the maximum number of tokens "
                "allowed (1048576).",
            )
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                signature = field_of(part, "thoughtSignature")
                if field_of(part, "functionCall") and signature:
                    state.signatures.append(base64.b64decode(signature))
        ask = ask_of(body, model)
        plans = [plan(ask, index) for index in range(ask.n)]
        gap = 0.001
        if model == "long":
            plans[0].content, gap = [f" w{i}" for i in range(2000)], 0.02
        if model == "paced":
            # Benchmarks: chunks arrive in separate reads, as from a generating engine.
            gap = 0.0002
        finishes = ["STOP" if p.finish != "length" else "MAX_TOKENS" for p in plans]
        if model == "safety":
            finishes = ["SAFETY"] * len(plans)
        config = field_of(body, "generationConfig") or {}
        logprobs = bool(field_of(config, "responseLogprobs"))
        top = int(config.get("logprobs") or 0)
        prompt = _prompt_tokens(body)
        if method == "generateContent":
            whole = [[part for chunk in _parts(p) for part in chunk] for p in plans]
            return web.json_response(self._response(whole, prompt, plans, finishes, logprobs, top))
        if method != "streamGenerateContent":
            return error_response(404, f"unknown method {method}")
        streams = [_parts(p) for p in plans]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            length = max(len(stream) for stream in streams)
            for position in range(length):
                if model == "stall" and position == 1:
                    await asyncio.sleep(3600)
                if model == "malformed" and position == 1:
                    await response.write(b'data: {"candidates": [\r\n\r\n')
                    await asyncio.sleep(3600)
                if model == "disconnect" and position == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                last = position == length - 1
                parts = [stream[position] if position < len(stream) else [] for stream in streams]
                await response.write(
                    _frame(
                        self._response(
                            parts, prompt, plans, finishes if last else None, logprobs, top
                        )
                    )
                )
                await asyncio.sleep(gap)
            await response.write_eof()
            state.completed += 1
        except (asyncio.CancelledError, ConnectionResetError):
            state.disconnects += 1
            raise
        return response

    @staticmethod
    def _response(
        parts: list[list[dict[str, Any]]],
        prompt: int,
        plans: list[ChoicePlan],
        finishes: list[str] | None,
        logprobs: bool,
        top: int,
    ) -> dict[str, Any]:
        candidates = []
        for index, candidate_parts in enumerate(parts):
            candidate: dict[str, Any] = {
                "content": {"parts": candidate_parts, "role": "model"},
                "index": index,
            }
            if finishes:
                candidate["finishReason"] = finishes[index]
            texts = [p["text"] for p in candidate_parts if "text" in p and not p.get("thought")]
            if logprobs and texts:
                chosen = [{"token": t, "logProbability": -0.25} for t in texts]
                candidate["logprobsResult"] = {
                    "chosenCandidates": chosen,
                    "topCandidates": [
                        {
                            "candidates": [
                                {"token": t if i == 0 else f"alt{i}", "logProbability": -0.25 * i}
                                for i in range(top)
                            ]
                        }
                        for t in texts
                    ],
                }
            candidates.append(candidate)
        thoughts = sum(len(p.reasoning) for p in plans)
        generated = sum(p.tokens for p in plans) - thoughts
        return {
            "candidates": candidates,
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": generated,
                "thoughtsTokenCount": thoughts,
                "totalTokenCount": prompt + generated + thoughts,
                "cachedContentTokenCount": 1,
            },
            "modelVersion": "fake-gemini",
        }
