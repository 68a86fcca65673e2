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
  * ``long``: 2000 tokens 20 ms apart (cancellation); ``paced``: 0.2 ms apart (benchmarks);
  * ``context-overflow``: OpenAI's real 400 (``code: context_length_exceeded``, ``param:
    messages``); ``reasoning-*``: reasoning first (also when ``reasoning_effort`` is set),
    ``reasoning-slow`` 150 ms apart.
Per-key behaviour: ``reject_keys[key] = status`` answers that key with 401 or 429.

The chat surface as OpenAI speaks it (replies decided in ``replies.py``): ``tools`` give tool
calls (streamed as deltas with ``index``, ``id``, ``name`` on the first fragment, then argument
fragments; several calls unless ``parallel_tool_calls`` is false; finish ``tool_calls``), a
trailing ``tool`` message gets a text answer, ``response_format`` json_schema / json_object
answers JSON, ``logprobs``/``top_logprobs`` add per-token logprobs, ``n`` interleaves choices,
reasoning streams ``reasoning_content`` deltas (as vLLM and DeepSeek do) and counts
``usage.completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from support.fakes.replies import Ask, ChoicePlan, pieces, plan
from support.fakes.server import FakeApi


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


def prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content)
        words += len(str(content or "").split()) + 1
    return words


def ask_of(body: dict[str, Any]) -> Ask:
    model = str(body.get("model", ""))
    tools = {
        str(tool["function"]["name"]): tool["function"].get("parameters") or {}
        for tool in body.get("tools") or []
    }
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    results: list[str] = []
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "tool":
            break
        results.insert(0, str(message.get("content")))
    fmt = body.get("response_format") or {}
    effort = body.get("reasoning_effort")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return Ask(
        max_tokens=int(limit) if limit else None,
        n=int(body.get("n") or 1),
        reasoning=model.startswith("reasoning") or bool(effort and effort != "none"),
        tools=tools,
        tool_choice=str(choice),
        parallel_tool_calls=body.get("parallel_tool_calls", True) is not False,
        tool_results=results,
        response_format=str(fmt.get("type", "text")),
        schema=(fmt.get("json_schema") or {}).get("schema"),
    )


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    kind = {401: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    if status == 400:
        kind = "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _logprob(token: str, position: int, top: int) -> dict[str, Any]:
    def entry(text: str, value: float) -> dict[str, Any]:
        return {"token": text, "logprob": value, "bytes": list(text.encode())}

    item = entry(token, -0.25 * (position % 4))
    item["top_logprobs"] = [entry(token if i == 0 else f"alt{i}", -0.25 * i) for i in range(top)]
    return item


def _usage(body: dict[str, Any], plans: list[ChoicePlan]) -> dict[str, Any]:
    prompt = prompt_tokens(body)
    completion = sum(p.tokens for p in plans)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": sum(len(p.reasoning) for p in plans)},
    }


def _deltas(choice: ChoicePlan, logprobs: bool, top: int) -> list[dict[str, Any]]:
    """One choice's stream: (delta, logprobs) per chunk, in OpenAI's order."""
    out: list[dict[str, Any]] = []
    for piece in choice.reasoning:
        out.append({"delta": {"reasoning_content": piece}})
    for position, piece in enumerate(choice.content):
        item: dict[str, Any] = {"delta": {"content": piece}}
        if logprobs:
            item["logprobs"] = {"content": [_logprob(piece, position, top)], "refusal": None}
        out.append(item)
    for index, call in enumerate(choice.calls):
        first = {"index": index, "id": call.id, "type": "function"}
        out.append(
            {"delta": {"tool_calls": [{**first, "function": {"name": call.name, "arguments": ""}}]}}
        )
        for fragment in pieces(call.arguments, 4):
            out.append(
                {"delta": {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}}
            )
    return out


class OpenAIFake(FakeApi):
    def __init__(self) -> None:
        self.state = OpenAIFakeState()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.server_url}/v1"

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
        if model == "context-overflow":
            return error_response(
                400,
                "This model's maximum context length is 16 tokens. However, your messages "
                f"resulted in {prompt_tokens(body) + 16} tokens. Please reduce the length of the "
                "messages.",
                code="context_length_exceeded",
                param="messages",
            )
        if model == "slow-first":
            await asyncio.sleep(5)
        ask = ask_of(body)
        plans = [plan(ask, index) for index in range(ask.n)]
        if model == "long":
            plans[0].content = [f" w{i}" for i in range(2000)]
        if not body.get("stream"):
            return self._whole(body, plans)
        return await self._stream(request, body, model, plans)

    def _whole(self, body: dict[str, Any], plans: list[ChoicePlan]) -> web.Response:
        top = int(body.get("top_logprobs") or 0)
        choices = []
        for index, choice in enumerate(plans):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(choice.content) if choice.content or not choice.calls else None,
                "refusal": None,
            }
            if choice.reasoning:
                message["reasoning_content"] = "".join(choice.reasoning)
            if choice.calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in choice.calls
                ]
            item: dict[str, Any] = {
                "index": index,
                "message": message,
                "finish_reason": choice.finish,
                "logprobs": None,
            }
            if body.get("logprobs"):
                item["logprobs"] = {
                    "content": [_logprob(p, i, top) for i, p in enumerate(choice.content)],
                    "refusal": None,
                }
            choices.append(item)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": choices,
                "usage": _usage(body, plans),
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, plans: list[ChoicePlan]
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
        gap = 0.02 if model == "long" else 0.001
        if model == "reasoning-slow":
            # Thinks longer than a short first-token timeout, but never goes silent.
            gap = 0.15
        if model == "paced":
            # Benchmarks: chunks arrive in separate reads, as from a generating engine.
            gap = 0.0002
        top = int(body.get("top_logprobs") or 0)
        streams = [_deltas(choice, bool(body.get("logprobs")), top) for choice in plans]

        def chunk(index: int, item: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": index, "delta": item.get("delta", {}), "finish_reason": finish}
            if "logprobs" in item:
                choice["logprobs"] = item["logprobs"]
            return _frame({**base, "choices": [choice]})

        try:
            for index in range(len(plans)):
                await response.write(chunk(index, {"delta": {"role": "assistant", "content": ""}}))
            # Choices interleave, as OpenAI sends them for n > 1.
            for position in range(max(len(stream) for stream in streams)):
                if model == "stall" and position == 1:
                    await asyncio.sleep(3600)
                if model == "malformed" and position == 1:
                    await response.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
                    await asyncio.sleep(3600)
                if model == "disconnect" and position == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                for index, stream in enumerate(streams):
                    if position < len(stream):
                        await response.write(chunk(index, stream[position]))
                await asyncio.sleep(gap)
            for index, choice in enumerate(plans):
                await response.write(chunk(index, {"delta": {}}, choice.finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(_frame({**base, "choices": [], "usage": _usage(body, plans)}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            state.completed += 1
        except (asyncio.CancelledError, ConnectionResetError):
            state.disconnects += 1
            raise
        return response
