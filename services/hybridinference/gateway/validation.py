"""Request validation shared by both surfaces: one set of rules, field names per surface.

Each check adds a FieldViolation instead of stopping at the first, so a client sees every problem
with its request at once (as google.rpc.BadRequest over gRPC, as OpenAI's `param` over HTTP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from hybridinference.common import record_limits
from hybridinference.common.errors import FieldViolation, ServiceError, invalid_argument
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_checks import check_messages, check_options
from hybridinference.gateway.naming import OPENAI, TYPED

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_FloatField = Literal["temperature", "top_p", "presence_penalty", "frequency_penalty"]
# Never looser than the record limits (common/record_limits.py): a request the gateway serves
# must be a record the logger stores (tests/unit/test_record_caps.py).
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = record_limits.MAX_STOP_CHARS
MAX_MODEL_NAME = record_limits.MAX_TEXT_CHARS
MAX_USER_CHARS = record_limits.MAX_TEXT_CHARS
MAX_NAME_CHARS = record_limits.MAX_TEXT_CHARS
MAX_METADATA_ENTRIES = 16
MAX_METADATA_KEY_CHARS = record_limits.MAX_METADATA_KEY_CHARS
MAX_METADATA_CHARS = 512
_NUL = record_limits.NUL


@dataclass(frozen=True)
class Limits:
    max_messages: int
    max_message_chars: int
    max_tokens_cap: int
    # Per-model caps (model name → cap) overriding max_tokens_cap.
    max_tokens_caps: dict[str, int] = field(default_factory=dict)

    def tokens_cap(self, model: str, declared: int | None = None) -> int:
        """The max_tokens cap of a model: the gateway's per-model override, else the model's
        declared output limit, else the gateway-wide cap."""
        if model in self.max_tokens_caps:
            return self.max_tokens_caps[model]
        return declared or self.max_tokens_cap


def check_chat(
    model: str,
    messages: list[chat_pb2.ChatMessage],
    sampling: chat_pb2.SamplingParams,
    limits: Limits,
    sampling_prefix: str,
    user: str = "",
    metadata: dict[str, str] | None = None,
    options: chat_pb2.ChatOptions | None = None,
    declared_output_limit: int | None = None,
) -> list[FieldViolation]:
    """Returns every violation; ``sampling_prefix`` names sampling fields as the surface does
    ("sampling." on the typed surface, which also names options and parts its own way)."""
    naming = TYPED if sampling_prefix else OPENAI
    problems: list[FieldViolation] = []
    if not model:
        problems.append(FieldViolation("model", "is required"))
    elif len(model) > MAX_MODEL_NAME:
        problems.append(FieldViolation("model", f"must be at most {MAX_MODEL_NAME} characters"))
    elif _NUL in model:
        problems.append(FieldViolation("model", "must not contain NUL characters"))
    problems.extend(_check_messages(messages, limits))
    rich = list(check_messages(messages))
    if options is not None and (
        options.ByteSize()
        or sampling.n
        or sampling.logprobs
        or sampling.logit_bias
        or sampling.HasField("top_logprobs")
    ):
        rich.extend(check_options(options, sampling))
    problems.extend(FieldViolation(naming(p.field), p.description) for p in rich)
    cap = limits.tokens_cap(model, declared_output_limit)
    problems.extend(_check_sampling(sampling, cap, sampling_prefix))
    if len(user) > MAX_USER_CHARS:
        problems.append(FieldViolation("user", f"must be at most {MAX_USER_CHARS} characters"))
    elif _NUL in user:
        problems.append(FieldViolation("user", "must not contain NUL characters"))
    if metadata:
        if len(metadata) > MAX_METADATA_ENTRIES:
            problems.append(
                FieldViolation("metadata", f"must have at most {MAX_METADATA_ENTRIES} entries")
            )
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_CHARS:
                problems.append(
                    FieldViolation(
                        f"metadata[{key[:32]}]",
                        f"keys must be at most {MAX_METADATA_KEY_CHARS} characters and values "
                        f"at most {MAX_METADATA_CHARS}",
                    )
                )
                break
            if _NUL in key or _NUL in value:
                problems.append(
                    FieldViolation(f"metadata[{key[:32]!r}]", "must not contain NUL characters")
                )
                break
    return problems


def _check_messages(messages: list[chat_pb2.ChatMessage], limits: Limits) -> list[FieldViolation]:
    if not messages:
        return [FieldViolation("messages", "must contain at least one message")]
    if len(messages) > limits.max_messages:
        return [FieldViolation("messages", f"must contain at most {limits.max_messages} messages")]
    problems = []
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            problems.append(
                FieldViolation(
                    f"messages[{index}].role",
                    f"must be one of {', '.join(sorted(ROLES))}; got {message.role[:32]!r}",
                )
            )
        if len(message.name) > MAX_NAME_CHARS or _NUL in message.name:
            problems.append(
                FieldViolation(
                    f"messages[{index}].name",
                    f"must be at most {MAX_NAME_CHARS} characters, without NUL characters",
                )
            )
        chars = len(message.content) + sum(len(part.text) for part in message.parts)
        if chars > limits.max_message_chars:
            problems.append(
                FieldViolation(
                    f"messages[{index}].content",
                    f"must be at most {limits.max_message_chars} characters",
                )
            )
    return problems


def _check_sampling(
    sampling: chat_pb2.SamplingParams, tokens_cap: int, prefix: str
) -> list[FieldViolation]:
    problems = []
    if sampling.HasField("max_tokens") and not 1 <= sampling.max_tokens <= tokens_cap:
        name = "max_completion_tokens" if sampling.max_tokens_is_completion_limit else "max_tokens"
        problems.append(
            FieldViolation(
                f"{prefix}max_tokens" if prefix else name,
                f"must be between 1 and {tokens_cap}; got {sampling.max_tokens}",
            )
        )
    ranges: tuple[tuple[_FloatField, float, float], ...] = (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    )
    for name, low, high in ranges:
        if sampling.HasField(name):
            value = getattr(sampling, name)
            if not (math.isfinite(value) and low <= value <= high):
                problems.append(
                    FieldViolation(f"{prefix}{name}", f"must be between {low} and {high}")
                )
    if sampling.HasField("top_p") and sampling.top_p == 0:
        problems.append(FieldViolation(f"{prefix}top_p", "must be greater than 0"))
    if len(sampling.stop) > MAX_STOP_SEQUENCES:
        problems.append(
            FieldViolation(f"{prefix}stop", f"must have at most {MAX_STOP_SEQUENCES} sequences")
        )
    if any(not stop for stop in sampling.stop):
        problems.append(FieldViolation(f"{prefix}stop", "sequences must not be empty"))
    if any(len(stop) > MAX_STOP_CHARS for stop in sampling.stop):
        problems.append(
            FieldViolation(
                f"{prefix}stop", f"sequences must be at most {MAX_STOP_CHARS} characters"
            )
        )
    if any(_NUL in stop for stop in sampling.stop):
        problems.append(FieldViolation(f"{prefix}stop", "must not contain NUL characters"))
    return problems


def raise_if_invalid(problems: list[FieldViolation]) -> None:
    if problems:
        raise invalid_argument(problems)


__all__ = ["ROLES", "Limits", "ServiceError", "check_chat", "raise_if_invalid"]
