"""Byte-exact OpenAI response bodies: chat.completion, chat.completion.chunk SSE frames, models.

Chunk frames are built from a per-request prefix so each token costs one small orjson call.
"""

from __future__ import annotations

from collections.abc import Iterable

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
}


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_object(usage: chat_pb2.Usage) -> dict[str, object]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def chat_completion(
    request_id: str, created: int, model: str, content: str, completion: router_pb2.Completion
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id(request_id),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": FINISH_REASONS.get(completion.finish_reason, "stop"),
                }
            ],
            "usage": usage_object(completion.usage),
            "system_fingerprint": None,
        }
    )


class ChunkWriter:
    """Renders the SSE frames of one streamed completion."""

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

    def _choice(self, delta: bytes, finish_reason: str | None) -> bytes:
        reason = orjson.dumps(finish_reason)
        return (
            self._prefix
            + b'{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + reason
            + b"}"
            + self._suffix
        )

    def role(self) -> bytes:
        """OpenAI's first chunk announces the role with empty content."""
        return self._choice(b'{"role":"assistant","content":""}', None)

    def content(self, text: str) -> bytes:
        return self._choice(b'{"content":' + orjson.dumps(text) + b"}", None)

    def finish(self, completion: router_pb2.Completion) -> bytes:
        frames = self._choice(b"{}", FINISH_REASONS.get(completion.finish_reason, "stop"))
        if self._include_usage:
            usage = orjson.dumps(usage_object(completion.usage))
            frames += self._prefix + b'],"usage":' + usage + b"}\n\n"
        return frames + DONE_FRAME


def error_frame(error: ServiceError) -> bytes:
    """An error after streaming began: an SSE event carrying OpenAI's error object."""
    return b"data: " + error.openai_body() + b"\n\n"


def model_object(name: str, owned_by: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def model_json(name: str, owned_by: str, created: int) -> bytes:
    return orjson.dumps(model_object(name, owned_by, created))


def model_list(models: Iterable[tuple[str, str]], created: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [model_object(name, owner, created) for name, owner in models],
        }
    )
