"""Byte-exact OpenAI response bodies: chat.completion, chat.completion.chunk SSE frames, models.

Chunk frames are built from a per-request prefix so each text token costs one small orjson
call; richer events (reasoning, tool-call fragments, refusal, logprobs) build their delta
object. Reasoning is written as ``reasoning_content``, as vLLM and DeepSeek-style clients read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from hybridinference.common.errors import ServiceError
from hybridinference.common.v1 import chat_pb2
from hybridinference.router.v1 import router_pb2

JSON = "application/json"
SSE = "text/event-stream"
DONE_FRAME = b"data: [DONE]\n\n"

FINISH_REASONS = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_object(usage: chat_pb2.Usage) -> dict[str, object]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _finish(reason: chat_pb2.FinishReason.ValueType) -> str:
    return FINISH_REASONS.get(reason, "stop")


def _token(entry: chat_pb2.TokenLogprob | chat_pb2.TopLogprob) -> dict[str, object]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.bytes) if entry.HasField("bytes") else None,
    }


def logprobs_object(logprobs: chat_pb2.Logprobs) -> dict[str, object]:
    def entries(items: Sequence[chat_pb2.TokenLogprob]) -> list[dict[str, object]] | None:
        if not items:
            return None
        return [
            {**_token(item), "top_logprobs": [_token(top) for top in item.top_logprobs]}
            for item in items
        ]

    return {"content": entries(logprobs.content) or [], "refusal": entries(logprobs.refusal)}


def tool_call_object(call: chat_pb2.ToolCall) -> dict[str, object]:
    return {
        "id": call.id,
        "type": call.type or "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def message_object(message: chat_pb2.ChatMessage) -> dict[str, object]:
    """An assistant message as OpenAI writes it: content null when the model only called tools."""
    result: dict[str, object] = {
        "role": "assistant",
        "content": message.content if message.content or not message.tool_calls else None,
        "refusal": message.refusal or None,
    }
    if message.tool_calls:
        result["tool_calls"] = [tool_call_object(call) for call in message.tool_calls]
    if message.reasoning_content:
        result["reasoning_content"] = message.reasoning_content
    return result


def choice_objects(
    reply: router_pb2.RouteUnaryResponse, completion: router_pb2.Completion
) -> list[dict[str, object]]:
    if not reply.choices:
        return [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content, "refusal": None},
                "logprobs": None,
                "finish_reason": _finish(completion.finish_reason),
            }
        ]
    return [
        {
            "index": choice.index,
            "message": message_object(choice.message),
            "logprobs": logprobs_object(choice.logprobs) if choice.HasField("logprobs") else None,
            "finish_reason": _finish(choice.finish_reason or completion.finish_reason),
        }
        for choice in reply.choices
    ]


def chat_completion(
    request_id: str,
    created: int,
    model: str,
    reply: router_pb2.RouteUnaryResponse,
    completion: router_pb2.Completion,
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id(request_id),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choice_objects(reply, completion),
            "usage": usage_object(completion.usage),
            "system_fingerprint": None,
        }
    )


class ChunkWriter:
    """Renders the SSE frames of one streamed completion (every choice of it)."""

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool) -> None:
        head = orjson.dumps(
            {
                "id": completion_id(request_id),
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
        )
        # Everything up to the choices array, reused by every frame.
        self._prefix = b"data: " + head[:-1] + b',"system_fingerprint":null,"choices":['
        self._suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._include_usage = include_usage
        self._started: set[int] = set()
        self._finished: set[int] = set()
        # Per choice index: everything before a content delta's text, built once.
        self._content_heads: dict[int, bytes] = {}
        # Per (choice, call) index: everything before a tool call's argument piece.
        self._argument_heads: dict[tuple[int, int], bytes] = {}
        self._argument_tail = b'}}]},"logprobs":null,"finish_reason":null}' + self._suffix
        self._content_tail = b'},"logprobs":null,"finish_reason":null}' + self._suffix

    def _choice(
        self, delta: bytes, finish_reason: str | None, index: int = 0, logprobs: bytes = b"null"
    ) -> bytes:
        reason = orjson.dumps(finish_reason)
        return (
            self._prefix
            + b'{"index":'
            + str(index).encode()
            + b',"delta":'
            + delta
            + b',"logprobs":'
            + logprobs
            + b',"finish_reason":'
            + reason
            + b"}"
            + self._suffix
        )

    def role(self, index: int = 0) -> bytes:
        """OpenAI's first chunk of a choice announces the role with empty content."""
        self._started.add(index)
        return self._choice(b'{"role":"assistant","content":""}', None, index)

    def content(self, text: str, index: int = 0) -> bytes:
        # The hot path (one call per streamed token): two concatenations around orjson.
        head = self._content_heads.get(index)
        if head is None:
            head = self._content_heads[index] = (
                self._prefix + b'{"index":' + str(index).encode() + b',"delta":{"content":'
            )
        return head + orjson.dumps(text) + self._content_tail

    def arguments(self, piece: str, index: int, call: int) -> bytes:
        """The next piece of a tool call's arguments (OpenAI's later fragments of a call)."""
        head = self._argument_heads.get((index, call))
        if head is None:
            head = self._argument_heads[(index, call)] = (
                self._prefix
                + b'{"index":'
                + str(index).encode()
                + b',"delta":{"tool_calls":[{"index":'
                + str(call).encode()
                + b',"function":{"arguments":'
            )
        return head + orjson.dumps(piece) + self._argument_tail

    def event(self, event: router_pb2.RouteResponse) -> bytes:
        """The frames of one routed event: its delta and, when it ends its choice, the finish."""
        index = event.index
        frame = b"" if index in self._started else self.role(index)
        # Cheapest reads first: text events (nearly all) have none of these.
        calls = event.tool_calls
        other = event.reasoning or event.refusal or event.HasField("logprobs")
        if not (calls or other):
            if text := event.delta:
                frame += self.content(text, index)
        elif not other and len(calls) == 1 and not event.delta:
            call = calls[0]
            if call.id or call.name:
                # A call's opening fragment.
                frame += (
                    self._prefix
                    + b'{"index":'
                    + str(index).encode()
                    + b',"delta":{"tool_calls":['
                    + orjson.dumps(_fragment(call))
                    + self._argument_tail[2:]
                )
            else:
                # An argument piece of a call already opened: as cheap as a text token.
                frame += self.arguments(call.arguments, index, call.index)
        else:
            delta: dict[str, object] = {}
            if event.delta:
                delta["content"] = event.delta
            if event.reasoning:
                delta["reasoning_content"] = event.reasoning
            if event.refusal:
                delta["refusal"] = event.refusal
            if event.tool_calls:
                delta["tool_calls"] = [_fragment(f) for f in event.tool_calls]
            logprobs = (
                orjson.dumps(logprobs_object(event.logprobs))
                if event.HasField("logprobs")
                else b"null"
            )
            frame += self._choice(orjson.dumps(delta), None, index, logprobs)
        if event.finish_reason and index not in self._finished:
            self._finished.add(index)
            frame += self._choice(b"{}", _finish(event.finish_reason), index)
        return frame

    def finish(self, completion: router_pb2.Completion) -> bytes:
        """The end: choice 0's finish if no event carried it, the usage chunk, [DONE]."""
        frames = b""
        if 0 not in self._finished:
            self._finished.add(0)
            frames += self._choice(b"{}", _finish(completion.finish_reason))
        if self._include_usage:
            usage = orjson.dumps(usage_object(completion.usage))
            frames += self._prefix + b'],"usage":' + usage + b"}\n\n"
        return frames + DONE_FRAME


def _fragment(fragment: chat_pb2.ToolCallDelta) -> dict[str, object]:
    """A tool-call delta as OpenAI streams it: id, type and name on a call's first fragment."""
    function: dict[str, str] = {"arguments": fragment.arguments}
    result: dict[str, object] = {"index": fragment.index}
    if fragment.id:
        result["id"] = fragment.id
        result["type"] = fragment.type or "function"
    if fragment.name:
        function["name"] = fragment.name
    result["function"] = function
    return result


def error_frame(error: ServiceError) -> bytes:
    """An error after streaming began: an SSE event carrying OpenAI's error object."""
    return b"data: " + error.openai_body() + b"\n\n"


def model_object(route: router_pb2.ModelRoute, created: int) -> dict[str, object]:
    caps = route.capabilities
    return {
        "id": route.name,
        "object": "model",
        "created": created,
        "owned_by": route.owned_by,
        # Not in OpenAI's schema (clients ignore unknown keys): what the model supports.
        "capabilities": {
            "tools": caps.tools,
            "structured_output": caps.structured_output,
            "json_mode": caps.json_mode,
            "reasoning": caps.reasoning,
            "logprobs": caps.logprobs,
            "multiple_choices": caps.multiple_choices,
            "input_modalities": list(caps.input_modalities),
            "context_length": caps.context_length or None,
            "max_output_tokens": caps.max_output_tokens or None,
        },
    }


def model_json(route: router_pb2.ModelRoute, created: int) -> bytes:
    return orjson.dumps(model_object(route, created))


def model_list(routes: Iterable[router_pb2.ModelRoute], created: int) -> bytes:
    return orjson.dumps({"object": "list", "data": [model_object(r, created) for r in routes]})
