"""Sampling parameters in an upstream's vocabulary: only the ones the caller set, so the
upstream applies its own defaults for the rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from hybridinference.common.v1 import chat_pb2

_OptionalField = Literal[
    "max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"
]
_OPTIONAL_FIELDS: tuple[_OptionalField, ...] = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)


def sampling_options(
    sampling: chat_pb2.SamplingParams, renames: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The set fields of ``sampling`` as keyword options, renamed where the upstream differs
    (e.g. ``{"max_tokens": "max_output_tokens", "stop": "stop_sequences"}`` for Gemini)."""
    names = renames or {}
    options: dict[str, Any] = {}
    for field in _OPTIONAL_FIELDS:
        if sampling.HasField(field):
            options[names.get(field, field)] = getattr(sampling, field)
    if not sampling.HasField("max_tokens") and sampling.default_max_tokens > 0:
        # The gateway's stand-in for "no limit": the model's output limit, so an upstream with
        # an unbounded (or vLLM's 16-token) default stops where the model's config says.
        options[names.get("max_tokens", "max_tokens")] = sampling.default_max_tokens
    if sampling.stop:
        options[names.get("stop", "stop")] = list(sampling.stop)
    return options
