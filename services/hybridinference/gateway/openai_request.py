"""Parses an OpenAI chat completion body into a ChatCall, with OpenAI's field names in errors."""

from __future__ import annotations

from typing import Any

import grpc
import orjson

from hybridinference.common.errors import FieldViolation, ServiceError, invalid_argument
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.validation import Limits, check_chat

_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def parse_chat_completion(body: bytes, limits: Limits, max_body_bytes: int) -> ChatCall:
    if len(body) > max_body_bytes:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request body is {len(body)} bytes; the limit is {max_body_bytes}",
            "request_too_large",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"We could not parse the JSON body of your request: {error}",
            "invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request body must be a JSON object",
            "invalid_json",
        )
    problems: list[FieldViolation] = []
    model = _string(data, "model", problems, required=True)
    messages = _messages(data.get("messages"), problems)
    sampling = _sampling(data, problems)
    stream = _bool(data, "stream", problems)
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            problems.append(FieldViolation("stream_options", "must be an object"))
        else:
            include_usage = _bool(options, "include_usage", problems, "stream_options.")
    n = data.get("n")
    if n is not None and n != 1:
        problems.append(FieldViolation("n", "only n=1 is supported"))
    user = _string(data, "user", problems)
    # Range checks run even after type errors so a client sees every problem at once; a field
    # that already failed its type check is not reported twice.
    reported = {problem.field for problem in problems}
    problems += [
        problem
        for problem in check_chat(model, messages, sampling, limits, sampling_prefix="", user=user)
        if problem.field not in reported
    ]
    if problems:
        raise invalid_argument(problems)
    return ChatCall(
        model=model,
        messages=messages,
        sampling=sampling,
        stream=stream,
        user=user,
        include_usage=include_usage and stream,
    )


def _string(
    data: dict[str, Any], key: str, problems: list[FieldViolation], required: bool = False
) -> str:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(FieldViolation(key, "is required"))
        return ""
    if not isinstance(value, str):
        problems.append(FieldViolation(key, "must be a string"))
        return ""
    return value


def _bool(data: dict[str, Any], key: str, problems: list[FieldViolation], prefix: str = "") -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        problems.append(FieldViolation(f"{prefix}{key}", "must be a boolean"))
        return False
    return value


def _messages(raw: Any, problems: list[FieldViolation]) -> list[chat_pb2.ChatMessage]:
    if raw is None:
        problems.append(FieldViolation("messages", "is required"))
        return []
    if not isinstance(raw, list):
        problems.append(FieldViolation("messages", "must be an array"))
        return []
    messages = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            problems.append(FieldViolation(f"messages[{index}]", "must be an object"))
            continue
        role = item.get("role")
        if not isinstance(role, str):
            problems.append(FieldViolation(f"messages[{index}].role", "must be a string"))
            role = ""
        content = _content(item.get("content"), f"messages[{index}].content", problems)
        name = item.get("name")
        messages.append(
            chat_pb2.ChatMessage(
                role=role, content=content, name=name if isinstance(name, str) else ""
            )
        )
    return messages


def _content(raw: Any, field: str, problems: list[FieldViolation]) -> str:
    """Text content: a string, null (assistant turns), or an array of text parts."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    if isinstance(raw, list):
        texts = []
        for index, part in enumerate(raw):
            if not isinstance(part, dict) or part.get("type") != "text":
                problems.append(
                    FieldViolation(f"{field}[{index}]", "only text content parts are supported")
                )
                continue
            text = part.get("text")
            if not isinstance(text, str):
                problems.append(FieldViolation(f"{field}[{index}].text", "must be a string"))
                continue
            texts.append(text)
        return "".join(texts)
    problems.append(FieldViolation(field, "must be a string or an array of text parts"))
    return ""


def _sampling(data: dict[str, Any], problems: list[FieldViolation]) -> chat_pb2.SamplingParams:
    sampling = chat_pb2.SamplingParams()
    # max_completion_tokens is the newer name; either sets the same limit.
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.get(key)
        if value is None:
            continue
        if not _is_int(value):
            problems.append(FieldViolation(key, "must be an integer"))
        elif not 1 <= value <= 2**31 - 1:
            problems.append(FieldViolation(key, f"must be a positive integer; got {value}"))
        else:
            sampling.max_tokens = value
            break
    for key in _FLOAT_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(FieldViolation(key, "must be a number"))
        else:
            setattr(sampling, key, float(value))
    stop = data.get("stop")
    if isinstance(stop, str):
        sampling.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        sampling.stop.extend(stop)
    elif stop is not None:
        problems.append(FieldViolation("stop", "must be a string or an array of strings"))
    seed = data.get("seed")
    if seed is not None:
        if not _is_int(seed) or not -(2**63) <= seed < 2**63:
            problems.append(FieldViolation("seed", "must be a 64-bit integer"))
        else:
            sampling.seed = seed
    return sampling


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
