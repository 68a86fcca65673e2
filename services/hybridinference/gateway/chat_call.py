"""The normalised form of a chat request, whichever surface it came through."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridinference.common.v1 import chat_pb2


@dataclass
class ChatCall:
    model: str
    messages: list[chat_pb2.ChatMessage]
    sampling: chat_pb2.SamplingParams
    stream: bool
    user: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # OpenAI's stream_options.include_usage: add a final chunk carrying usage.
    include_usage: bool = False

    @classmethod
    def unparsed(cls, stream: bool) -> ChatCall:
        """Stands in for a request whose body could not be read, so it still gets a record."""
        return cls(model="", messages=[], sampling=chat_pb2.SamplingParams(), stream=stream)
