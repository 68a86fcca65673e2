"""RequestRecord <-> table row, shared by both stores so they store exactly the same values.

Timestamps are kept at microsecond precision (what PostgreSQL stores); the nanoseconds of a
``google.protobuf.Timestamp`` beyond that are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format, timestamp_pb2

from hybridinference.common.v1 import chat_pb2
from hybridinference.logger.v1 import logger_pb2

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Row(NamedTuple):
    """One ``request_log`` row, in column order, with driver-neutral Python values."""

    request_id: str
    started_at: datetime
    surface: str
    api_key_id: str
    user: str
    requested_model: str
    served_model: str
    provider: str
    endpoint: str
    attempts: int
    stream: bool
    status: str
    error: str
    ttft_ms: float
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    total_tokens: int | None
    cost_usd: float
    finish_reason: str
    # JSON text; None when the record had no sampling parameters.
    sampling: str | None
    # JSON text of a string -> string object.
    metadata: str
    fallbacks: int
    hedged: bool
    # Captured content; None when not captured (capture off or nothing sent).
    prompt: str | None
    response: str | None
    # Of completion_tokens, those spent on reasoning; None without usage.
    reasoning_tokens: int | None
    # JSON arrays of strings.
    tools_offered: str
    tools_called: str
    features: str
    # The caller's own id (not unique; "" on rows stored before it was kept).
    client_request_id: str
    # W3C traceparent of the request ("" when tracing was off).
    traceparent: str
    # Time at the router before the serving attempt started (0 on rows stored before).
    queue_ms: float


COLUMNS: tuple[str, ...] = Row._fields
# "user" is a reserved word in PostgreSQL, so every column name is quoted in SQL.
COLUMN_LIST = ", ".join(f'"{name}"' for name in COLUMNS)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def record_to_row(record: logger_pb2.RequestRecord) -> Row:
    """Assumes the record passed validation (timestamp in range, known finish reason).

    This runs once per stored row in the drainer, on the same core as everything else in the
    logger, so it is written for speed: positional construction, one attribute read per field,
    table lookups instead of descriptor calls.
    """
    r = record
    prompt: int | None = None
    completion: int | None = None
    cached: int | None = None
    total: int | None = None
    reasoning: int | None = None
    if r.HasField("usage"):
        u = r.usage
        prompt, completion, cached, total, reasoning = (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.total_tokens,
            u.reasoning_tokens,
        )
    metadata = r.metadata
    finish = r.finish_reason
    return Row(
        r.request_id,
        _to_datetime(r.started_at),
        r.surface,
        r.api_key_id,
        r.user,
        r.requested_model,
        r.served_model,
        r.provider,
        r.endpoint,
        r.attempts,
        r.stream,
        r.status,
        r.error,
        r.ttft_ms,
        r.latency_ms,
        prompt,
        completion,
        cached,
        total,
        r.cost_usd,
        _FINISH_NAMES.get(finish) or chat_pb2.FinishReason.Name(finish),
        _sampling_json(r.sampling) if r.HasField("sampling") else None,
        # Most records carry no metadata; "{}" is what orjson writes for an empty map.
        orjson.dumps(dict(metadata)).decode() if metadata else "{}",
        r.fallbacks,
        r.hedged,
        r.prompt or None,
        r.response or None,
        reasoning,
        # Most records use no tools or features: skip the encoder.
        _json_list(r.tools_offered),
        _json_list(r.tools_called),
        _json_list(r.features),
        r.client_request_id,
        r.traceparent,
        r.queue_ms,
    )


def _json_list(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode() if values else "[]"


def _to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    # Timestamp.ToDatetime is general and slow; this runs once per stored row.
    return EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


# Enum value -> name, so the common case skips the descriptor lookup of FinishReason.Name.
_FINISH_NAMES: dict[int, str] = {
    value.number: value.name for value in chat_pb2.FinishReason.DESCRIPTOR.values
}
_REPEATED, _MAP, _PRESENCE, _PLAIN = range(4)


def _kind(field: Any) -> int:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _MAP
    if field.is_repeated:
        return _REPEATED
    return _PRESENCE if field.has_presence else _PLAIN


# (name, kind) of each SamplingParams field, in field-number order (ListFields' order).
_SAMPLING_FIELDS: tuple[tuple[str, int], ...] = tuple(
    (field.name, _kind(field))
    for field in sorted(chat_pb2.SamplingParams.DESCRIPTOR.fields, key=lambda f: f.number)
)


def _sampling_json(sampling: chat_pb2.SamplingParams) -> str:
    """The set fields as a JSON object (what json_format.Parse reads back), several times
    faster than json_format.MessageToJson, which dominated the cost of a row. Reads the fields
    by name from a precomputed table: ListFields plus per-field descriptor properties cost about
    twice as much."""
    # Any: the stubs type HasField's argument as a literal of the field names.
    message: Any = sampling
    fields: dict[str, Any] = {}
    for name, kind in _SAMPLING_FIELDS:
        if kind == _PRESENCE:
            if message.HasField(name):
                fields[name] = getattr(message, name)
        elif kind == _PLAIN:
            # No presence: the default (0, false) means unset, as json_format writes it.
            if value := getattr(message, name):
                fields[name] = value
        elif values := getattr(message, name):
            # JSON object keys are strings, whatever the map's key type.
            fields[name] = {str(k): v for k, v in values.items()} if kind == _MAP else list(values)
    return orjson.dumps(fields).decode()


def row_to_record(row: Row) -> logger_pb2.RequestRecord:
    record = logger_pb2.RequestRecord(
        request_id=row.request_id,
        surface=row.surface,
        api_key_id=row.api_key_id,
        user=row.user,
        requested_model=row.requested_model,
        served_model=row.served_model,
        provider=row.provider,
        endpoint=row.endpoint,
        attempts=row.attempts,
        stream=bool(row.stream),
        status=row.status,
        error=row.error,
        ttft_ms=row.ttft_ms,
        latency_ms=row.latency_ms,
        cost_usd=row.cost_usd,
        finish_reason=_finish_reason(row.finish_reason),
        metadata=_json_object(row.metadata),
        fallbacks=row.fallbacks,
        hedged=bool(row.hedged),
        prompt=row.prompt or "",
        response=row.response or "",
        client_request_id=row.client_request_id,
        traceparent=row.traceparent,
        queue_ms=row.queue_ms,
    )
    record.started_at.FromDatetime(row.started_at)
    if row.prompt_tokens is not None:
        record.usage.CopyFrom(
            chat_pb2.Usage(
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens or 0,
                cached_tokens=row.cached_tokens or 0,
                total_tokens=row.total_tokens or 0,
                reasoning_tokens=row.reasoning_tokens or 0,
            )
        )
    record.tools_offered.extend(_strings(row.tools_offered))
    record.tools_called.extend(_strings(row.tools_called))
    record.features.extend(_strings(row.features))
    if row.sampling is not None:
        json_format.Parse(row.sampling, record.sampling)
    return record


def _finish_reason(name: str) -> chat_pb2.FinishReason.ValueType:
    # A row written by a newer logger may name a reason this build does not know yet.
    try:
        return chat_pb2.FinishReason.Value(name)
    except ValueError:
        return chat_pb2.FINISH_REASON_UNSPECIFIED


def _strings(text: str | None) -> list[str]:
    value: Any = orjson.loads(text) if text else []
    return [str(v) for v in value] if isinstance(value, list) else []


def _json_object(text: str) -> dict[str, str]:
    value: Any = orjson.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
