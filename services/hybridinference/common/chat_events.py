"""Merging streamed chat events into whole choices, and back.

Provider workers (GenerateUnary) and the router (RouteUnary) answer callers that do not stream
with complete choices; both merge the same per-choice events (``GenerateResponse`` and
``RouteResponse`` share the field names), so the merge lives here once. A reply that is one
choice of plain text stays on the old fast path (no ``choices``), so text-only requests cost
what they did before the richer contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.v1 import router_pb2

# The per-choice fields of GenerateResponse and RouteResponse have the same names.
ChoiceEvent = provider_pb2.GenerateResponse | router_pb2.RouteResponse


class _Choice:
    __slots__ = ("calls", "content", "finish", "logprobs", "reasoning", "refusal")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED
        self.calls: dict[int, chat_pb2.ToolCall] = {}
        self.logprobs: chat_pb2.Logprobs | None = None


class ChoiceAccumulator:
    """Collects the events of one generation, per choice."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        # Anything beyond choice 0's text and finish reason (see ``plain``).
        self._rich = False

    def add(self, event: ChoiceEvent) -> None:
        index = event.index
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
            if index:
                self._rich = True
        if event.delta:
            choice.content.append(event.delta)
        if event.reasoning:
            choice.reasoning.append(event.reasoning)
            self._rich = True
        if event.refusal:
            choice.refusal.append(event.refusal)
            self._rich = True
        if event.finish_reason:
            choice.finish = event.finish_reason
        if event.tool_calls:
            self._rich = True
            for fragment in event.tool_calls:
                call = choice.calls.get(fragment.index)
                if call is None:
                    call = choice.calls[fragment.index] = chat_pb2.ToolCall(type="function")
                if fragment.id:
                    call.id = fragment.id
                if fragment.type:
                    call.type = fragment.type
                if fragment.name:
                    call.function.name += fragment.name
                call.function.arguments += fragment.arguments
        if event.HasField("logprobs"):
            self._rich = True
            if choice.logprobs is None:
                choice.logprobs = chat_pb2.Logprobs()
            choice.logprobs.content.extend(event.logprobs.content)
            choice.logprobs.refusal.extend(event.logprobs.refusal)

    @property
    def plain(self) -> bool:
        """One choice of text only: the reply fits the old single-text shape."""
        return not self._rich

    def text(self, index: int = 0) -> str:
        choice = self._choices.get(index)
        return "".join(choice.content) if choice is not None else ""

    def finish_reason(self, index: int = 0) -> chat_pb2.FinishReason.ValueType:
        choice = self._choices.get(index)
        return choice.finish if choice is not None else chat_pb2.FINISH_REASON_UNSPECIFIED

    def choices(self) -> list[chat_pb2.Choice]:
        """Every choice, complete, in index order."""
        result = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            message = chat_pb2.ChatMessage(
                role="assistant",
                content="".join(choice.content),
                refusal="".join(choice.refusal),
                reasoning_content="".join(choice.reasoning),
                tool_calls=[choice.calls[i] for i in sorted(choice.calls)],
            )
            whole = chat_pb2.Choice(index=index, message=message, finish_reason=choice.finish)
            if choice.logprobs is not None:
                whole.logprobs.CopyFrom(choice.logprobs)
            result.append(whole)
        return result


def tool_call_deltas(calls: Sequence[chat_pb2.ToolCall]) -> list[chat_pb2.ToolCallDelta]:
    """Complete tool calls as one fragment each."""
    return [
        chat_pb2.ToolCallDelta(
            index=i,
            id=call.id,
            type=call.type or "function",
            name=call.function.name,
            arguments=call.function.arguments,
        )
        for i, call in enumerate(calls)
    ]


def choice_events(choices: Iterable[chat_pb2.Choice]) -> list[dict[str, object]]:
    """Whole choices as one event's fields each (keyword arguments of GenerateResponse and
    RouteResponse alike), so a whole reply travels the streaming code path unchanged."""
    events: list[dict[str, object]] = []
    for choice in choices:
        message = choice.message
        fields: dict[str, object] = {
            "index": choice.index,
            "delta": message.content,
            "reasoning": message.reasoning_content,
            "refusal": message.refusal,
            "tool_calls": tool_call_deltas(message.tool_calls),
            "finish_reason": choice.finish_reason,
        }
        if choice.HasField("logprobs"):
            fields["logprobs"] = choice.logprobs
        events.append(fields)
    return events
