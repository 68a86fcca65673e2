"""OpenAI request options (JSON) → ChatOptions: tools, tool_choice, response_format, reasoning,
service tier and the vLLM / Gemini extensions clients send in the same body."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from hybridinference.common.errors import FieldViolation
from hybridinference.common.v1 import chat_pb2

_MODES = {
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "required": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
_EFFORTS = {
    "none": chat_pb2.REASONING_EFFORT_NONE,
    "minimal": chat_pb2.REASONING_EFFORT_MINIMAL,
    "low": chat_pb2.REASONING_EFFORT_LOW,
    "medium": chat_pb2.REASONING_EFFORT_MEDIUM,
    "high": chat_pb2.REASONING_EFFORT_HIGH,
}
_FORMATS = {
    "text": chat_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
# vLLM's older guided-decoding names, mapped onto structured_outputs.
_GUIDED = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
# Every top-level key this module reads.
OPTION_KEYS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "service_tier",
        "top_k",
        "min_p",
        "repetition_penalty",
        "min_tokens",
        "structured_outputs",
        "chat_template_kwargs",
        "extra_body",
        *_GUIDED,
    }
)


def parse_options(data: dict[str, Any], problems: list[FieldViolation]) -> chat_pb2.ChatOptions:
    options = chat_pb2.ChatOptions()
    if OPTION_KEYS.isdisjoint(data):
        # A plain request: nothing to read.
        return options
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            problems.append(FieldViolation("tools", "must be an array"))
        else:
            for index, tool in enumerate(tools):
                _tool(tool, f"tools[{index}]", options, problems)
    _tool_choice(data.get("tool_choice"), options, problems)
    parallel = data.get("parallel_tool_calls")
    if parallel is not None:
        if isinstance(parallel, bool):
            options.parallel_tool_calls = parallel
        else:
            problems.append(FieldViolation("parallel_tool_calls", "must be a boolean"))
    _response_format(data.get("response_format"), options, problems)
    effort = data.get("reasoning_effort")
    if effort is not None:
        if effort in _EFFORTS:
            options.reasoning_effort = _EFFORTS[effort]
        else:
            problems.append(
                FieldViolation("reasoning_effort", f"must be one of {', '.join(_EFFORTS)}")
            )
    tier = data.get("service_tier")
    if tier is not None:
        if isinstance(tier, str):
            options.service_tier = tier
        else:
            problems.append(FieldViolation("service_tier", "must be a string"))
    _vllm(data, options, problems)
    _gemini(data.get("extra_body"), options, problems)
    return options


def _tool(
    raw: Any, where: str, options: chat_pb2.ChatOptions, problems: list[FieldViolation]
) -> None:
    if not isinstance(raw, dict):
        problems.append(FieldViolation(where, "must be an object"))
        return
    tool = options.tools.add(type=raw.get("type") if isinstance(raw.get("type"), str) else "")
    function = raw.get("function")
    if not isinstance(function, dict):
        problems.append(FieldViolation(f"{where}.function", "must be an object"))
        return
    name = function.get("name")
    if isinstance(name, str):
        tool.function.name = name
    else:
        problems.append(FieldViolation(f"{where}.function.name", "must be a string"))
    description = function.get("description")
    if description is not None:
        if isinstance(description, str):
            tool.function.description = description
        else:
            problems.append(FieldViolation(f"{where}.function.description", "must be a string"))
    parameters = function.get("parameters")
    if parameters is not None:
        _struct(parameters, tool.function.parameters, f"{where}.function.parameters", problems)
    strict = function.get("strict")
    if strict is not None:
        if isinstance(strict, bool):
            tool.function.strict = strict
        else:
            problems.append(FieldViolation(f"{where}.function.strict", "must be a boolean"))


def _tool_choice(raw: Any, options: chat_pb2.ChatOptions, problems: list[FieldViolation]) -> None:
    if raw is None:
        return
    if isinstance(raw, str):
        if raw in _MODES:
            options.tool_choice.mode = _MODES[raw]
        else:
            problems.append(FieldViolation("tool_choice", "must be none, auto, required or a tool"))
        return
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or raw.get("type") != "function":
        problems.append(
            FieldViolation(
                "tool_choice",
                'must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": ...}}',
            )
        )
        return
    options.tool_choice.function_name = name


def _response_format(
    raw: Any, options: chat_pb2.ChatOptions, problems: list[FieldViolation]
) -> None:
    if raw is None:
        return
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in _FORMATS:
        problems.append(
            FieldViolation("response_format.type", "must be text, json_object or json_schema")
        )
        return
    fmt = options.response_format
    fmt.type = _FORMATS[kind]
    if kind != "json_schema":
        return
    schema = raw.get("json_schema")
    if not isinstance(schema, dict):
        problems.append(FieldViolation("response_format.json_schema", "must be an object"))
        return
    for key in ("name", "description"):
        value = schema.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            setattr(fmt.json_schema, key, value)
        else:
            problems.append(
                FieldViolation(f"response_format.json_schema.{key}", "must be a string")
            )
    body = schema.get("schema")
    if body is not None:
        _struct(body, fmt.json_schema.schema, "response_format.json_schema.schema", problems)
    strict = schema.get("strict")
    if strict is not None:
        if isinstance(strict, bool):
            fmt.json_schema.strict = strict
        else:
            problems.append(
                FieldViolation("response_format.json_schema.strict", "must be a boolean")
            )


def _vllm(
    data: dict[str, Any], options: chat_pb2.ChatOptions, problems: list[FieldViolation]
) -> None:
    vllm = options.vllm
    used = False
    top_k = data.get("top_k")
    if top_k is not None:
        used = True
        if _is_int(top_k) and (top_k == -1 or top_k >= 1):
            vllm.top_k = top_k
        else:
            problems.append(FieldViolation("top_k", "must be -1 or a positive integer"))
    for key, low, high in (("min_p", 0.0, 1.0), ("repetition_penalty", 0.0, 2.0**31)):
        value = data.get(key)
        if value is None:
            continue
        used = True
        if _is_number(value) and low <= value <= high and (key == "min_p" or value > 0):
            setattr(vllm, key, float(value))
        else:
            problems.append(
                FieldViolation(key, "is out of range" if _is_number(value) else "must be a number")
            )
    min_tokens = data.get("min_tokens")
    if min_tokens is not None:
        used = True
        if _is_int(min_tokens) and 0 <= min_tokens < 2**31:
            vllm.min_tokens = min_tokens
        else:
            problems.append(FieldViolation("min_tokens", "must be a non-negative integer"))
    kwargs = data.get("chat_template_kwargs")
    if kwargs is not None:
        used = True
        _struct(kwargs, vllm.chat_template_kwargs, "chat_template_kwargs", problems)
    outputs = data.get("structured_outputs")
    guided = {key: data[key] for key in _GUIDED if data.get(key) is not None}
    if outputs is not None or guided:
        used = True
        source: dict[str, Any] = {}
        if isinstance(outputs, dict):
            source.update(outputs)
        elif outputs is not None:
            problems.append(FieldViolation("structured_outputs", "must be an object"))
        source.update({_GUIDED[key]: value for key, value in guided.items()})
        _structured(source, vllm.structured_outputs, problems)
    if not used:
        options.ClearField("vllm")


def _structured(
    source: dict[str, Any], outputs: chat_pb2.StructuredOutputs, problems: list[FieldViolation]
) -> None:
    for key, value in source.items():
        where = f"structured_outputs.{key}"
        if key == "json":
            if isinstance(value, str):
                problems.append(FieldViolation(where, "must be a JSON Schema object"))
            else:
                _struct(value, outputs.json, where, problems)
        elif key in ("regex", "grammar"):
            if isinstance(value, str):
                setattr(outputs, key, value)
            else:
                problems.append(FieldViolation(where, "must be a string"))
        elif key == "choice":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                outputs.choice.extend(value)
            else:
                problems.append(FieldViolation(where, "must be an array of strings"))
        else:
            problems.append(
                FieldViolation(where, "is not supported (json, regex, choice, grammar)")
            )


def _gemini(raw: Any, options: chat_pb2.ChatOptions, problems: list[FieldViolation]) -> None:
    """Gemini's OpenAI-compatible extension: {"extra_body": {"google": {"thinking_config":
    {"thinking_budget": N, "include_thoughts": bool}}}} (what its docs tell SDK users to send)."""
    if raw is None:
        return
    google = raw.get("google") if isinstance(raw, dict) and set(raw) == {"google"} else None
    config = (
        google.get("thinking_config")
        if isinstance(google, dict) and set(google) == {"thinking_config"}
        else None
    )
    if not isinstance(config, dict):
        problems.append(
            FieldViolation(
                "extra_body",
                'only {"google": {"thinking_config": {...}}} (Gemini thinking) is supported',
            )
        )
        return
    budget = config.get("thinking_budget")
    if budget is not None:
        if _is_int(budget) and -1 <= budget < 2**31:
            options.gemini.thinking_budget = budget
        else:
            problems.append(
                FieldViolation(
                    "extra_body.google.thinking_config.thinking_budget", "must be an integer >= -1"
                )
            )
    include = config.get("include_thoughts")
    if include is not None:
        if isinstance(include, bool):
            options.gemini.include_thoughts = include
        else:
            problems.append(
                FieldViolation(
                    "extra_body.google.thinking_config.include_thoughts", "must be a boolean"
                )
            )
    unknown = set(config) - {"thinking_budget", "include_thoughts"}
    if unknown:
        problems.append(
            FieldViolation(
                f"extra_body.google.thinking_config.{sorted(unknown)[0]}", "is not supported"
            )
        )


def _struct(
    raw: Any, target: struct_pb2.Struct, where: str, problems: list[FieldViolation]
) -> None:
    if not isinstance(raw, dict):
        problems.append(FieldViolation(where, "must be a JSON object"))
        return
    try:
        target.update(raw)
    except (ValueError, TypeError) as error:
        problems.append(FieldViolation(where, f"is not valid JSON data: {error}"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
