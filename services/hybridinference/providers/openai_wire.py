"""OpenAI chat-completions wire format: request bodies out, stream chunks in, for every adapter
that speaks it (vllm, openai_compatible over raw HTTP; openai through the SDK).

``StreamAssembler`` turns upstream chunks into GenerateResponse events with the provider
contract: the first event carries ``model``; one last event carries ``usage`` and
``finish_reason``. Chunks are plain dicts from orjson; nothing is validated beyond what is used.
"""

from __future__ import annotations

from typing import Any

from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.sampling import sampling_options as set_sampling_options

FINISH_REASONS: dict[str, chat_pb2.FinishReason.ValueType] = {
    "stop": chat_pb2.FINISH_REASON_STOP,
    "length": chat_pb2.FINISH_REASON_LENGTH,
    "content_filter": chat_pb2.FINISH_REASON_CONTENT_FILTER,
    "tool_calls": chat_pb2.FINISH_REASON_STOP,
    "function_call": chat_pb2.FINISH_REASON_STOP,
}


class MalformedChunk(ValueError):
    """A stream chunk that is not the shape the wire format promises."""


def chat_messages(request: provider_pb2.GenerateRequest) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for message in request.messages:
        item = {"role": message.role, "content": message.content}
        if message.name:
            item["name"] = message.name
        messages.append(item)
    return messages


def sampling_options(
    sampling: chat_pb2.SamplingParams, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """Only the parameters the caller set, so the upstream applies its own defaults otherwise."""
    return set_sampling_options(sampling, {"max_tokens": max_tokens_field})


def chat_body(
    model: str, request: provider_pb2.GenerateRequest, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """A streaming chat-completions request that asks for usage in the stream."""
    return {
        "model": model,
        "messages": chat_messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_options(request.sampling, max_tokens_field),
    }


class StreamAssembler:
    """Stateful translation of one stream's chunks into provider events."""

    __slots__ = ("_cached", "_completion", "_finish", "_model", "_prompt", "_sent_first", "deltas")

    def __init__(self, model: str) -> None:
        self._model = model
        self._sent_first = False
        self._finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED
        self._prompt: int | None = None
        self._completion: int | None = None
        self._cached = 0
        # Content chunks streamed; the token count when the upstream reports no usage.
        self.deltas = 0

    @property
    def finished(self) -> bool:
        """Whether the upstream said why it stopped (a stream may end right after)."""
        return self._finish != chat_pb2.FINISH_REASON_UNSPECIFIED

    def text(self, content: str) -> provider_pb2.GenerateResponse:
        self.deltas += 1
        if self._sent_first:
            return provider_pb2.GenerateResponse(delta=content)
        self._sent_first = True
        return provider_pb2.GenerateResponse(delta=content, model=self._model)

    def finish(self, reason: str) -> None:
        self._finish = FINISH_REASONS.get(reason, chat_pb2.FINISH_REASON_STOP)

    def usage(self, prompt: int, completion: int, cached: int = 0) -> None:
        self._prompt, self._completion, self._cached = prompt, completion, cached

    def chunk(self, chunk: Any) -> provider_pb2.GenerateResponse | None:
        """One decoded chunk (a dict); returns an event for new text, else None."""
        if not isinstance(chunk, dict):
            raise MalformedChunk(f"chunk is {type(chunk).__name__}, not an object")
        event = None
        choices = chunk.get("choices")
        if choices:
            try:
                choice = choices[0]
                delta = choice.get("delta")
                content = delta.get("content") if delta else None
                reason = choice.get("finish_reason")
            except (AttributeError, IndexError, KeyError, TypeError) as error:
                raise MalformedChunk(f"bad choices: {error}") from None
            if content:
                if not isinstance(content, str):
                    raise MalformedChunk("delta.content is not a string")
                event = self.text(content)
            if reason:
                self.finish(str(reason))
        elif choices is not None and not isinstance(choices, list):
            raise MalformedChunk("choices is not a list")
        usage = chunk.get("usage")
        if usage:
            try:
                details = usage.get("prompt_tokens_details") or {}
                self.usage(
                    int(usage["prompt_tokens"]),
                    int(usage["completion_tokens"]),
                    int(details.get("cached_tokens") or 0),
                )
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise MalformedChunk(f"bad usage: {error}") from None
        return event

    def final(self) -> provider_pb2.GenerateResponse:
        """The last event: usage (the upstream's, else counted) and finish_reason."""
        completion = self._completion if self._completion is not None else self.deltas
        prompt = self._prompt or 0
        event = provider_pb2.GenerateResponse(
            usage=chat_pb2.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=self._cached,
            ),
            finish_reason=self._finish or chat_pb2.FINISH_REASON_STOP,
        )
        if not self._sent_first:
            self._sent_first = True
            event.model = self._model
        return event
