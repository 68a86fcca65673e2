"""What the fake upstreams answer, decided once for both wire formats (OpenAI and Gemini).

Deterministic: the same request gets the same reply. A reply is per choice: reasoning pieces,
content pieces, tool calls (name and JSON arguments) and a finish reason. Structured output and
tool arguments are a minimal instance of the JSON Schema given (every property, the first enum
value, the minimum of a number), so clients that validate against the schema (the openai SDK's
``parse()``, pydantic) accept them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


def schema_instance(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """A small value valid against ``schema`` (the subset of JSON Schema LLM APIs use)."""
    if not isinstance(schema, dict):
        return None
    defs = defs if defs is not None else {**schema.get("$defs", {}), **schema.get("defs", {})}
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return schema_instance(defs.get(name, {}), defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: schema_instance(sub, defs) for name, sub in properties.items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), defs)] * int(schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * int(schema.get("minLength", 1))


def pieces(text: str, size: int) -> list[str]:
    """``text`` cut in pieces of ``size`` characters (how arguments and JSON stream)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass
class ToolCallPlan:
    id: str
    name: str
    arguments: str


@dataclass
class ChoicePlan:
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    calls: list[ToolCallPlan] = field(default_factory=list)
    finish: str = "stop"

    @property
    def tokens(self) -> int:
        return (
            len(self.reasoning)
            + len(self.content)
            + sum(len(pieces(call.arguments, 4)) + 1 for call in self.calls)
        )


@dataclass(frozen=True)
class Ask:
    """A request in wire-neutral terms."""

    max_tokens: int | None
    n: int
    reasoning: bool
    # Tools: name → JSON Schema of the arguments.
    tools: dict[str, Any]
    # "auto", "none", "required" or a function name.
    tool_choice: str
    parallel_tool_calls: bool
    # Text of the tool results at the end of the conversation (empty: the last turn is not one).
    tool_results: list[str]
    # "text", "json_object" or "json_schema" (with the schema).
    response_format: str
    schema: Any = None


def plan(ask: Ask, choice: int) -> ChoicePlan:
    result = ChoicePlan()
    count = ask.max_tokens or 5
    if ask.reasoning:
        result.reasoning = [f"think{i} " for i in range(3)]
    if ask.tool_results:
        result.content = pieces("results: " + "; ".join(ask.tool_results), 6)
        return result
    if ask.tools and ask.tool_choice != "none":
        names = list(ask.tools)
        if ask.tool_choice not in ("auto", "required"):
            names = [ask.tool_choice]
        elif not ask.parallel_tool_calls:
            names = names[:1]
        result.calls = [
            ToolCallPlan(
                id=f"call_{choice}_{index}",
                name=name,
                arguments=orjson.dumps(schema_instance(ask.tools.get(name, {}))).decode(),
            )
            for index, name in enumerate(names)
        ]
        result.finish = "tool_calls"
        return result
    if ask.response_format == "json_schema":
        result.content = pieces(orjson.dumps(schema_instance(ask.schema)).decode(), 5)
        return result
    if ask.response_format == "json_object":
        result.content = pieces('{"ok": true}', 5)
        return result
    result.content = [f"w{i}" if i == 0 else f" w{i}" for i in range(count)]
    if choice:
        result.content = [f"c{choice}{piece}" for piece in result.content]
    if ask.max_tokens:
        result.finish = "length"
    return result
