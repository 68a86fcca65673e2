"""Which chat features a request uses, and whether a model's capabilities cover them.

One place for the rule, used by the gateway (to refuse with 400 naming the field) and by the
router (to route only to models, fallbacks included, that declare what the request uses).
Field names are OpenAI's (``tools``, ``messages[2].content[1]``); the typed surface renames them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridinference.common.errors import FieldViolation
from hybridinference.common.settings import CapabilitySettings
from hybridinference.common.v1 import chat_pb2

# Feature names, as records and metrics report them.
TOOLS = "tools"
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
REASONING = "reasoning"
LOGPROBS = "logprobs"
MULTIPLE_CHOICES = "n"
IMAGE = "image"
AUDIO = "audio"
FILE = "file"

_PART_MODALITY = {"image_url": IMAGE, "input_audio": AUDIO, "file": FILE}


@dataclass(frozen=True)
class Use:
    """One feature a request uses, and the (first) field that uses it."""

    feature: str
    field: str


def features_used(
    messages: Sequence[chat_pb2.ChatMessage],
    sampling: chat_pb2.SamplingParams,
    options: chat_pb2.ChatOptions,
) -> list[Use]:
    """Every feature beyond plain text the request relies on, once each."""
    uses: dict[str, Use] = {}

    def add(feature: str, field: str) -> None:
        uses.setdefault(feature, Use(feature, field))

    if options.tools:
        add(TOOLS, "tools")
    elif options.HasField("tool_choice"):
        add(TOOLS, "tool_choice")
    fmt = options.response_format.type
    if fmt == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        add(JSON_SCHEMA, "response_format")
    elif fmt == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        add(JSON_OBJECT, "response_format")
    if options.reasoning_effort:
        add(REASONING, "reasoning_effort")
    if sampling.logprobs:
        add(LOGPROBS, "logprobs")
    elif sampling.HasField("top_logprobs"):
        add(LOGPROBS, "top_logprobs")
    if sampling.n > 1:
        add(MULTIPLE_CHOICES, "n")
    for index, message in enumerate(messages):
        if message.tool_calls:
            add(TOOLS, f"messages[{index}].tool_calls")
        elif message.role == "tool":
            add(TOOLS, f"messages[{index}]")
        for part_index, part in enumerate(message.parts):
            kind = part.WhichOneof("kind")
            modality = _PART_MODALITY.get(kind or "")
            if modality is not None:
                add(modality, f"messages[{index}].content[{part_index}]")
    return list(uses.values())


def _supports(feature: str, caps: CapabilitySettings) -> bool:
    if feature == TOOLS:
        return caps.tools
    if feature == JSON_SCHEMA:
        return caps.structured_output
    if feature == JSON_OBJECT:
        return caps.json_mode or caps.structured_output
    if feature == REASONING:
        return caps.reasoning
    if feature == LOGPROBS:
        return caps.logprobs
    if feature == MULTIPLE_CHOICES:
        return caps.multiple_choices
    return feature in caps.input_modalities


_WHAT = {
    TOOLS: "tool calling",
    JSON_SCHEMA: "structured output (response_format json_schema)",
    JSON_OBJECT: "JSON mode (response_format json_object)",
    REASONING: "reasoning",
    LOGPROBS: "logprobs",
    MULTIPLE_CHOICES: "more than one choice (n > 1)",
    IMAGE: "image input",
    AUDIO: "audio input",
    FILE: "file input",
}


def unsupported(uses: Sequence[Use], caps: CapabilitySettings, model: str) -> list[FieldViolation]:
    """A violation for each used feature the model does not declare."""
    return [
        FieldViolation(use.field, f"model {model!r} does not support {_WHAT[use.feature]}")
        for use in uses
        if not _supports(use.feature, caps)
    ]


def supports_all(uses: Sequence[Use], caps: CapabilitySettings) -> bool:
    return all(_supports(use.feature, caps) for use in uses)


def capabilities_proto(caps: CapabilitySettings, cap_default: int) -> chat_pb2.ModelCapabilities:
    """The capabilities as clients see them (``/v1/models``, ListModels)."""
    return chat_pb2.ModelCapabilities(
        tools=caps.tools,
        structured_output=caps.structured_output,
        json_mode=caps.json_mode or caps.structured_output,
        reasoning=caps.reasoning,
        logprobs=caps.logprobs,
        input_modalities=caps.input_modalities,
        context_length=caps.context_length,
        max_output_tokens=caps.max_output_tokens or cap_default,
        passthrough_fields=caps.passthrough_fields,
        multiple_choices=caps.multiple_choices,
    )


def capabilities_settings(proto: chat_pb2.ModelCapabilities) -> CapabilitySettings:
    """Back from the wire form (the gateway learns capabilities from the router's ListModels)."""
    return CapabilitySettings(
        tools=proto.tools,
        structured_output=proto.structured_output,
        json_mode=proto.json_mode,
        reasoning=proto.reasoning,
        logprobs=proto.logprobs,
        multiple_choices=proto.multiple_choices,
        input_modalities=[m for m in proto.input_modalities if m in _MODALITIES],  # type: ignore[misc]
        context_length=proto.context_length,
        max_output_tokens=proto.max_output_tokens or None,
        passthrough_fields=list(proto.passthrough_fields),
    )


_MODALITIES = ("text", "image", "audio", "file")
