"""RequestRecord <-> table row, shared by both stores so they store exactly the same values.

Timestamps are kept at microsecond precision (what PostgreSQL stores); the nanoseconds of a
``google.protobuf.Timestamp`` beyond that are dropped.
"""

from __future__ import annotations

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


COLUMNS: tuple[str, ...] = Row._fields
# "user" is a reserved word in PostgreSQL, so every column name is quoted in SQL.
COLUMN_LIST = ", ".join(f'"{name}"' for name in COLUMNS)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def record_to_row(record: logger_pb2.RequestRecord) -> Row:
    """Assumes the record passed validation (timestamp in range, known finish reason)."""
    usage = record.usage if record.HasField("usage") else None
    sampling = _sampling_json(record.sampling) if record.HasField("sampling") else None
    return Row(
        request_id=record.request_id,
        started_at=_to_datetime(record.started_at),
        surface=record.surface,
        api_key_id=record.api_key_id,
        user=record.user,
        requested_model=record.requested_model,
        served_model=record.served_model,
        provider=record.provider,
        endpoint=record.endpoint,
        attempts=record.attempts,
        stream=record.stream,
        status=record.status,
        error=record.error,
        ttft_ms=record.ttft_ms,
        latency_ms=record.latency_ms,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        total_tokens=usage.total_tokens if usage else None,
        cost_usd=record.cost_usd,
        finish_reason=chat_pb2.FinishReason.Name(record.finish_reason),
        sampling=sampling,
        metadata=orjson.dumps(dict(record.metadata)).decode(),
        fallbacks=record.fallbacks,
        hedged=record.hedged,
        prompt=record.prompt or None,
        response=record.response or None,
    )


def _to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    # Timestamp.ToDatetime is general and slow; this runs once per stored row.
    return EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def _sampling_json(sampling: chat_pb2.SamplingParams) -> str:
    """The set fields as a JSON object (what json_format.Parse reads back), several times
    faster than json_format.MessageToJson, which dominated the cost of a row."""
    fields: dict[str, Any] = {}
    for field, value in sampling.ListFields():
        fields[field.name] = list(value) if field.is_repeated else value
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
    )
    record.started_at.FromDatetime(row.started_at)
    if row.prompt_tokens is not None:
        record.usage.CopyFrom(
            chat_pb2.Usage(
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens or 0,
                cached_tokens=row.cached_tokens or 0,
                total_tokens=row.total_tokens or 0,
            )
        )
    if row.sampling is not None:
        json_format.Parse(row.sampling, record.sampling)
    return record


def _finish_reason(name: str) -> chat_pb2.FinishReason.ValueType:
    # A row written by a newer logger may name a reason this build does not know yet.
    try:
        return chat_pb2.FinishReason.Value(name)
    except ValueError:
        return chat_pb2.FINISH_REASON_UNSPECIFIED


def _json_object(text: str) -> dict[str, str]:
    value: Any = orjson.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
