"""Parses an OpenAI chat completion body into a ChatCall, with OpenAI's field names in errors.

Every top-level field OpenAI (and vLLM's and Gemini's OpenAI-compatible servers) define is
read into the typed contract; type errors are collected on the call and reported together
with the shared checks (``admission.prepare``), so a client sees every problem at once. Keys
nobody defines are kept in ``ChatCall.unknown``: refused there unless the model lets them
through.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson

from hybridinference.common.errors import FieldViolation, ServiceError
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.openai_messages import parse_messages
from hybridinference.gateway.openai_options import OPTION_KEYS, parse_options

_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# Top-level keys read here (options are read by openai_options).
_KEYS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "stop",
        "seed",
        "user",
        "metadata",
        "store",
        *_FLOAT_FIELDS,
    }
)
KNOWN_KEYS = _KEYS | OPTION_KEYS
MAX_LOGIT_BIAS = 1024


def parse_chat_completion(body: bytes, max_body_bytes: int) -> ChatCall:
    if len(body) > max_body_bytes:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request body is {len(body)} bytes; the limit is {max_body_bytes} bytes "
            "(gateway.max_body_bytes)",
            "request_too_large",
            http_status_override=413,
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
    messages = parse_messages(data.get("messages"), problems)
    sampling = _sampling(data, problems)
    options = parse_options(data, problems)
    stream = _bool(data, "stream", problems)
    include_usage = False
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            problems.append(FieldViolation("stream_options", "must be an object"))
        else:
            include_usage = _bool(stream_options, "include_usage", problems, "stream_options.")
            for key in stream_options.keys() - {"include_usage"}:
                problems.append(FieldViolation(f"stream_options.{key}", "is not supported"))
    user = _string(data, "user", problems)
    options.user = user
    metadata = _metadata(data.get("metadata"), problems)
    if data.get("store"):
        # Stored completions live at OpenAI, not here: accepting it would be a silent drop.
        problems.append(FieldViolation("store", "stored completions are not supported"))
    return ChatCall(
        model=model,
        messages=messages,
        sampling=sampling,
        stream=stream,
        user=user,
        metadata=metadata,
        include_usage=include_usage and stream,
        options=options,
        unknown={key: data[key] for key in data.keys() - KNOWN_KEYS},
        problems=problems,
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


def _metadata(raw: Any, problems: list[FieldViolation]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        problems.append(FieldViolation("metadata", "must be an object of string values"))
        return {}
    return raw


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
            sampling.max_tokens_is_completion_limit = key == "max_completion_tokens"
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
    n = data.get("n")
    if n is not None:
        if _is_int(n) and 1 <= n < 2**31:
            sampling.n = n
        else:
            problems.append(FieldViolation("n", "must be a positive integer"))
    sampling.logprobs = _bool(data, "logprobs", problems)
    top = data.get("top_logprobs")
    if top is not None:
        if _is_int(top) and -(2**31) <= top < 2**31:
            sampling.top_logprobs = top
        else:
            problems.append(FieldViolation("top_logprobs", "must be an integer"))
    _logit_bias(data.get("logit_bias"), sampling, problems)
    return sampling


def _logit_bias(
    raw: Any, sampling: chat_pb2.SamplingParams, problems: list[FieldViolation]
) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict) or len(raw) > MAX_LOGIT_BIAS:
        problems.append(
            FieldViolation("logit_bias", f"must be an object of at most {MAX_LOGIT_BIAS} entries")
        )
        return
    for token, bias in raw.items():
        if not (token.isdigit() and int(token) < 2**31) or not isinstance(bias, int | float):
            problems.append(
                FieldViolation("logit_bias", "maps token ids (integer strings) to numbers")
            )
            return
        sampling.logit_bias[int(token)] = float(bias)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
