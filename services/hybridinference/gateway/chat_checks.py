"""Checks of the rich chat fields, shared by both surfaces: content parts, tool calls and tool
results, tools, tool_choice, response_format and the JSON Schemas inside them.

Fields are named the OpenAI way; ``naming`` renames them for the typed surface.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from hybridinference.common.errors import FieldViolation
from hybridinference.common.v1 import chat_pb2

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20
AUDIO_FORMATS = frozenset({"wav", "mp3"})
JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Keywords whose value is one schema, a list of schemas, or a map of schemas.
_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions", "patternProperties")
_MAX_SCHEMA_DEPTH = 32


def check_messages(messages: Sequence[chat_pb2.ChatMessage]) -> Iterator[FieldViolation]:
    """Parts and tool-call structure; a tool result must answer an earlier call."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.content and message.parts:
            yield FieldViolation(f"{where}.content", "set either text content or parts, not both")
        for part_index, part in enumerate(message.parts):
            yield from _check_part(part, f"{where}.content[{part_index}]")
        if message.tool_calls and message.role != "assistant":
            yield FieldViolation(f"{where}.tool_calls", "only assistant messages have tool calls")
        for call_index, call in enumerate(message.tool_calls):
            at = f"{where}.tool_calls[{call_index}]"
            if not call.id:
                yield FieldViolation(f"{at}.id", "is required")
            if call.type not in ("", "function"):
                yield FieldViolation(f"{at}.type", "must be 'function'")
            if not call.function.name:
                yield FieldViolation(f"{at}.function.name", "is required")
            called.add(call.id)
        if message.role == "tool":
            if not message.tool_call_id:
                yield FieldViolation(f"{where}.tool_call_id", "is required for tool messages")
            elif message.tool_call_id not in called:
                yield FieldViolation(
                    f"{where}.tool_call_id",
                    f"{message.tool_call_id[:64]!r} answers no tool call of an earlier "
                    "assistant message",
                )
        elif message.tool_call_id:
            yield FieldViolation(f"{where}.tool_call_id", "only tool messages answer tool calls")
        if message.refusal and message.role != "assistant":
            yield FieldViolation(f"{where}.refusal", "only assistant messages have a refusal")


def _check_part(part: chat_pb2.ContentPart, where: str) -> Iterator[FieldViolation]:
    kind = part.WhichOneof("kind")
    if kind is None:
        yield FieldViolation(where, "must be a text, image_url, input_audio or file part")
    elif kind == "image_url":
        url = part.image_url.url
        if not (url.startswith(("http://", "https://")) or url.startswith("data:image/")):
            yield FieldViolation(
                f"{where}.image_url.url", "must be an http(s) URL or a data:image/... URL"
            )
    elif kind == "input_audio":
        if not part.input_audio.data:
            yield FieldViolation(f"{where}.input_audio.data", "is required (base64 audio)")
        if part.input_audio.format not in AUDIO_FORMATS:
            yield FieldViolation(f"{where}.input_audio.format", "must be 'wav' or 'mp3'")
    elif kind == "file" and not (part.file.file_data or part.file.file_id):
        yield FieldViolation(f"{where}.file", "needs file_data or file_id")


def check_options(
    options: chat_pb2.ChatOptions, sampling: chat_pb2.SamplingParams
) -> Iterator[FieldViolation]:
    names: set[str] = set()
    if len(options.tools) > MAX_TOOLS:
        yield FieldViolation("tools", f"must have at most {MAX_TOOLS} tools")
    for index, tool in enumerate(options.tools):
        where = f"tools[{index}]"
        if tool.type != "function":
            yield FieldViolation(f"{where}.type", "must be 'function'")
        name = tool.function.name
        if not NAME.match(name):
            yield FieldViolation(
                f"{where}.function.name", "must be 1-64 characters of a-z, A-Z, 0-9, _ and -"
            )
        elif name in names:
            yield FieldViolation(f"{where}.function.name", f"{name!r} is defined twice")
        names.add(name)
        if tool.function.HasField("parameters"):
            parameters = _plain(tool.function.parameters)
            at = f"{where}.function.parameters"
            if parameters.get("type", "object") != "object":
                yield FieldViolation(f"{at}.type", "function parameters must be an object schema")
            yield from check_json_schema(parameters, at)
    choice = options.tool_choice
    which = choice.WhichOneof("choice")
    choosing = which is not None and not (
        which == "mode" and choice.mode == chat_pb2.TOOL_CHOICE_MODE_NONE
    )
    if choosing and not options.tools:
        yield FieldViolation("tool_choice", "is only allowed when tools are given")
    if which == "function_name" and options.tools and choice.function_name not in names:
        yield FieldViolation(
            "tool_choice", f"names {choice.function_name[:64]!r}, which is not one of the tools"
        )
    fmt = options.response_format
    if fmt.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = fmt.json_schema
        if not NAME.match(schema.name):
            yield FieldViolation(
                "response_format.json_schema.name",
                "must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
            )
        if not schema.HasField("schema"):
            yield FieldViolation("response_format.json_schema.schema", "is required")
        else:
            yield from check_json_schema(
                _plain(schema.schema), "response_format.json_schema.schema"
            )
    elif fmt.HasField("json_schema"):
        yield FieldViolation("response_format.json_schema", "needs type 'json_schema'")
    if sampling.n and not 1 <= sampling.n <= MAX_CHOICES:
        yield FieldViolation("n", f"must be between 1 and {MAX_CHOICES}")
    if sampling.HasField("top_logprobs"):
        if not 0 <= sampling.top_logprobs <= MAX_TOP_LOGPROBS:
            yield FieldViolation("top_logprobs", f"must be between 0 and {MAX_TOP_LOGPROBS}")
        elif not sampling.logprobs:
            yield FieldViolation("top_logprobs", "requires logprobs to be true")
    for token, bias in sampling.logit_bias.items():
        if not -100 <= bias <= 100:
            yield FieldViolation(f"logit_bias[{token}]", "must be between -100 and 100")
            break
    vllm = options.vllm
    if vllm.HasField("structured_outputs"):
        outputs = vllm.structured_outputs
        chosen = [
            outputs.HasField("json"),
            bool(outputs.regex),
            bool(outputs.choice),
            bool(outputs.grammar),
        ]
        if sum(chosen) != 1:
            yield FieldViolation(
                "structured_outputs", "set exactly one of json, regex, choice, grammar"
            )
        if outputs.HasField("json"):
            yield from check_json_schema(_plain(outputs.json), "structured_outputs.json")


def check_json_schema(schema: Any, where: str, depth: int = 0) -> Iterator[FieldViolation]:
    """Structural JSON Schema checks: what a provider would choke on, named precisely."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        yield FieldViolation(where, "must be a JSON Schema (an object)")
        return
    if depth > _MAX_SCHEMA_DEPTH:
        yield FieldViolation(where, f"nests deeper than {_MAX_SCHEMA_DEPTH} levels")
        return
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and not all(isinstance(k, str) and k in JSON_TYPES for k in kinds):
        yield FieldViolation(f"{where}.type", f"must be one of {', '.join(sorted(JSON_TYPES))}")
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        yield FieldViolation(f"{where}.required", "must be an array of property names")
    enum = schema.get("enum")
    if enum is not None and not isinstance(enum, list):
        yield FieldViolation(f"{where}.enum", "must be an array")
    for key in _ONE:
        if key in schema:
            yield from check_json_schema(schema[key], f"{where}.{key}", depth + 1)
    for key in _MANY:
        if key in schema:
            value = schema[key]
            if not isinstance(value, list):
                yield FieldViolation(f"{where}.{key}", "must be an array of schemas")
                continue
            for i, sub in enumerate(value):
                yield from check_json_schema(sub, f"{where}.{key}[{i}]", depth + 1)
    for key in _MAP:
        if key in schema:
            value = schema[key]
            if not isinstance(value, Mapping):
                yield FieldViolation(f"{where}.{key}", "must be an object of schemas")
                continue
            for name, sub in value.items():
                yield from check_json_schema(sub, f"{where}.{key}.{name}", depth + 1)
    ref = schema.get("$ref")
    if ref is not None and not isinstance(ref, str):
        yield FieldViolation(f"{where}.$ref", "must be a string")


def _plain(struct: Any) -> dict[str, Any]:
    value = json_format.MessageToDict(struct)
    return value if isinstance(value, dict) else {}
