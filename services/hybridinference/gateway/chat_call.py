"""The normalised form of a chat request, whichever surface it came through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hybridinference.common.errors import FieldViolation
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.naming import OPENAI, Naming


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
    options: chat_pb2.ChatOptions = field(default_factory=chat_pb2.ChatOptions)
    # Top-level fields the gateway does not model (OpenAI surface): refused with 400 unless the
    # model's config passes them through (then they travel in options.extra_body).
    unknown: dict[str, Any] = field(default_factory=dict)
    # Type errors found while parsing, reported with the shared checks' findings.
    problems: list[FieldViolation] = field(default_factory=list)
    # How the surface names fields in errors.
    naming: Naming = OPENAI

    @classmethod
    def unparsed(cls, stream: bool) -> ChatCall:
        """Stands in for a request whose body could not be read, so it still gets a record."""
        return cls(model="", messages=[], sampling=chat_pb2.SamplingParams(), stream=stream)
