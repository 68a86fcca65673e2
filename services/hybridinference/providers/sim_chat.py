"""The simulated model's answers beyond plain text: tool calls, JSON matching a schema,
reasoning and logprobs, all a pure function of the request (like the text itself).

Rules, so tests and demos can predict them:
  * tools offered (tool_choice not "none") and no tool result since the last user message:
    the model calls tools instead of answering — the named one (tool_choice), else every
    offered tool once (only the first when parallel_tool_calls is false); arguments are an
    instance of each tool's parameter schema. After tool results it answers in text.
  * response_format json_schema: the content is an instance of the schema; json_object: a
    small JSON object.
  * reasoning_effort (other than "none"): reasoning text before the answer, 4/8/16 tokens for
    low/medium/high (minimal: 2).
  * logprobs: every content token gets a log probability and top_logprobs alternatives.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import json_format

from hybridinference.common.v1 import chat_pb2

_REASONING_TOKENS = {
    chat_pb2.REASONING_EFFORT_MINIMAL: 2,
    chat_pb2.REASONING_EFFORT_LOW: 4,
    chat_pb2.REASONING_EFFORT_MEDIUM: 8,
    chat_pb2.REASONING_EFFORT_HIGH: 16,
}
# Deepest schema nesting an instance is built for (recursive $refs stop here).
_MAX_DEPTH = 8


def reasoning_tokens(options: chat_pb2.ChatOptions) -> int:
    return _REASONING_TOKENS.get(options.reasoning_effort, 0)


def tool_calls(
    messages: Sequence[chat_pb2.ChatMessage], options: chat_pb2.ChatOptions, rng: random.Random
) -> list[chat_pb2.ToolCall]:
    """The calls the simulated model makes now; empty when it answers in text."""
    if not options.tools:
        return []
    choice = options.tool_choice
    mode = choice.mode if choice.WhichOneof("choice") == "mode" else None
    if mode == chat_pb2.TOOL_CHOICE_MODE_NONE:
        return []
    # Tool results after the last user message: the model has what it asked for.
    for message in reversed(messages):
        if message.role == "tool":
            return []
        if message.role == "user":
            break
    tools = [tool.function for tool in options.tools]
    if choice.WhichOneof("choice") == "function_name":
        tools = [f for f in tools if f.name == choice.function_name][:1]
    elif options.HasField("parallel_tool_calls") and not options.parallel_tool_calls:
        tools = tools[:1]
    calls = []
    for function in tools:
        schema = _struct(function.parameters) if function.HasField("parameters") else {}
        arguments = instance(schema, rng) if schema else {}
        digest = hashlib.blake2b(
            f"{function.name}:{rng.random()}".encode(), digest_size=6
        ).hexdigest()
        calls.append(
            chat_pb2.ToolCall(
                id=f"call_{digest}",
                type="function",
                function=chat_pb2.FunctionCall(
                    name=function.name, arguments=orjson.dumps(arguments).decode()
                ),
            )
        )
    return calls


def json_content(options: chat_pb2.ChatOptions, words: Sequence[str], rng: random.Random) -> str:
    """The JSON answer response_format asks for, or "" for text."""
    fmt = options.response_format
    if fmt.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = _struct(fmt.json_schema.schema) if fmt.json_schema.HasField("schema") else {}
        return orjson.dumps(instance(schema, rng)).decode()
    if fmt.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return orjson.dumps({"answer": "".join(words).strip()}).decode()
    return ""


def split_json(text: str, size: int = 8) -> list[str]:
    """JSON text as stream pieces (the simulated model's 'tokens' for structured output)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def logprobs(
    tokens: Sequence[str], top: int, rng: random.Random, vocabulary: Sequence[str]
) -> list[chat_pb2.TokenLogprob]:
    """A log probability per token, with ``top`` alternatives (the chosen one first)."""
    result = []
    for token in tokens:
        chosen = -round(rng.uniform(0.01, 2.0), 4)
        entry = chat_pb2.TokenLogprob(token=token, logprob=chosen, bytes=token.encode())
        alternatives = [token, *rng.sample(list(vocabulary), max(top - 1, 0))][:top]
        for rank, alternative in enumerate(alternatives):
            value = chosen if rank == 0 else chosen - rank - rng.random()
            entry.top_logprobs.append(
                chat_pb2.TopLogprob(token=alternative, logprob=value, bytes=alternative.encode())
            )
        result.append(entry)
    return result


def instance(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A value that validates against ``schema`` (the JSON Schema subset structured outputs
    use: object/array/string/number/integer/boolean/null, enum, const, anyOf/oneOf/allOf,
    $ref into $defs/definitions, min/max bounds, minItems)."""
    return _instance(schema, schema, rng, 0)


def _instance(schema: Any, root: Mapping[str, Any], rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _instance(_resolve(schema["$ref"], root), root, rng, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _instance(options[0], root, rng, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                merged.update(part)
        return _instance(merged, root, rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {name: _instance(sub, root, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 0) or 0), 1)
        maximum = schema.get("maxItems")
        if isinstance(maximum, int | float) and not isinstance(maximum, bool):
            count = min(count, int(maximum))
        return [_instance(schema.get("items", {}), root, rng, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = _bound(schema, "minimum", "exclusiveMinimum", 0, 1)
        high = _bound(schema, "maximum", "exclusiveMaximum", low + 100, -1)
        low_int = math.ceil(low)
        return rng.randint(low_int, max(math.floor(high), low_int))
    if kind == "number":
        low = _bound(schema, "minimum", "exclusiveMinimum", 0.0, 0)
        high = _bound(schema, "maximum", "exclusiveMaximum", low + 100.0, 0)
        return round(rng.uniform(low, high), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _bound(
    schema: Mapping[str, Any], inclusive: str, exclusive: str, default: float, step: int
) -> float:
    value = schema.get(inclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    value = schema.get(exclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) + step
    return default


_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor")


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    if fmt == "email":
        return "sim@example.com"
    if fmt == "uri":
        return "https://example.com/sim"
    text = rng.choice(_WORDS)
    minimum = int(_number(schema.get("minLength"), 0))
    if len(text) < minimum:
        text = (text * (minimum // len(text) + 1))[:minimum]
    maximum = _number(schema.get("maxLength"), -1)
    if maximum >= 0:
        text = text[: int(maximum)]
    return text


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _resolve(ref: Any, root: Mapping[str, Any]) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, Mapping):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node


def _struct(struct: Any) -> dict[str, Any]:
    value = json_format.MessageToDict(struct)
    return value if isinstance(value, dict) else {}
