"""Per-record validation for WriteRecords: a bad record is rejected with a reason, never raised.

The limits keep one misbehaving client from bloating the table, and the character checks keep
out what PostgreSQL cannot store (NUL in text or JSONB), so both stores accept the same records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# The limits are shared with the gateway, which caps records to them as it builds them.
from hybridinference.common.record_limits import (
    MAX_ERROR_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    MAX_NAMES,
    MAX_RECORD_BYTES,
    MAX_REQUEST_ID_CHARS,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEXT_CHARS,
    SHORT_TEXT_FIELDS,
)
from hybridinference.common.v1 import chat_pb2
from hybridinference.logger.rows import Row, record_to_row
from hybridinference.logger.v1 import logger_pb2

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799

_SHORT_TEXT_FIELDS = SHORT_TEXT_FIELDS
_NON_NEGATIVE_FLOATS = ("ttft_ms", "latency_ms", "cost_usd", "queue_ms")
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
_SamplingFloat = Literal["temperature", "top_p", "presence_penalty", "frequency_penalty"]
_SAMPLING_FLOATS: tuple[_SamplingFloat, ...] = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
)


_CONTROL = re.compile("[\x00-\x1f\x7f]")
_FINISH_REASONS = frozenset(chat_pb2.FinishReason.values())


@dataclass(frozen=True)
class Rejection:
    index: int
    reason: str


def partition(
    records: Sequence[logger_pb2.RequestRecord],
) -> tuple[list[logger_pb2.RequestRecord], list[Rejection]]:
    """Splits a batch into the records to store and the rejected ones (by batch position)."""
    valid: list[logger_pb2.RequestRecord] = []
    rejected: list[Rejection] = []
    for index, record in enumerate(records):
        reason = check_record(record)
        if reason is None:
            valid.append(record)
        else:
            rejected.append(Rejection(index, reason))
    return valid, rejected


def check_record(record: logger_pb2.RequestRecord) -> str | None:
    """The first problem with the record, or None when it can be stored."""
    admitted = admit(record)
    return admitted if isinstance(admitted, str) else None


def admit(record: logger_pb2.RequestRecord) -> Row | str:
    """The record's row (rows.py) when it can be stored, else the first problem.

    Captured prompt and response are capped by the capture policy (capture.py)
    before this runs, so they do not count towards MAX_RECORD_BYTES.
    """
    size = record.ByteSize() - len(record.prompt.encode()) - len(record.response.encode())
    if size > MAX_RECORD_BYTES:
        return f"record is {size} bytes, more than the limit of {MAX_RECORD_BYTES}"
    row = _plain_row(record)
    if row is not None:
        return row
    reason = (
        _check_request_id(record.request_id)
        or _check_client_request_id(record.client_request_id)
        or _check_started_at(record)
        or _check_texts(record)
        or _check_numbers(record)
        or _check_metadata(record.metadata)
        or _check_sampling(record)
        or _check_names(record)
    )
    return reason if reason is not None else record_to_row(record)


def _plain_row(record: logger_pb2.RequestRecord) -> Row | None:
    """The record's row when every check below passes; None when one may not, and the checks
    below then find which. The same rules as those checks, applied to the row the record is
    stored as: the logger converts each record once, here, and reading a protobuf field costs
    far more than reading a tuple item, so this reads the record only where the row cannot tell.
    It may refuse a valid record (the checks below then accept it), never the reverse."""
    r = record
    # What the conversion itself needs: a representable time and a known finish reason.
    if not r.HasField("started_at"):
        return None
    stamp = r.started_at
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 1_000_000_000:
        return None
    if r.finish_reason not in _FINISH_REASONS:
        return None
    row = record_to_row(r)
    (
        request_id,
        _,
        surface,
        api_key_id,
        user,
        requested_model,
        served_model,
        provider,
        endpoint,
        attempts,
        _,
        status,
        error,
        ttft,
        latency,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        total_tokens,
        cost,
        _,
        sampling,
        metadata,
        fallbacks,
        _,
        prompt,
        response,
        reasoning_tokens,
        tools_offered,
        tools_called,
        features,
        client_request_id,
        traceparent,
        queue,
    ) = row
    if not request_id or len(request_id) > MAX_REQUEST_ID_CHARS or _CONTROL.search(request_id):
        return None
    if len(client_request_id) > MAX_REQUEST_ID_CHARS or _CONTROL.search(client_request_id):
        return None
    texts = (
        surface,
        api_key_id,
        user,
        requested_model,
        served_model,
        provider,
        endpoint,
        status,
        traceparent,
    )
    if max(map(len, texts)) > MAX_TEXT_CHARS or len(error) > MAX_ERROR_CHARS:
        return None
    if "\x00" in "".join(texts) or "\x00" in error:
        return None
    if (prompt and "\x00" in prompt) or (response and "\x00" in response):
        return None
    # NaN fails every comparison, so this also refuses it.
    if not (
        0 <= ttft < math.inf
        and 0 <= latency < math.inf
        and 0 <= cost < math.inf
        and 0 <= queue < math.inf
    ):
        return None
    if attempts < 0 or fallbacks < 0:
        return None
    # A record has all four token counts or none.
    if prompt_tokens is not None and (
        min(prompt_tokens, completion_tokens or 0, cached_tokens or 0, total_tokens or 0) < 0
    ):
        return None
    if reasoning_tokens is not None and reasoning_tokens < 0:
        return None
    # Lists of names: "[]" almost always; anything else gets the full check below.
    listed = tools_offered != "[]" or tools_called != "[]" or features != "[]"
    if listed and _check_names(r) is not None:
        return None
    # JSON text no longer than the shortest limit holds no longer key or value, nor more
    # entries than allowed; JSON writes NUL as \u0000. Longer text: the entries are checked.
    long_or_nul = len(metadata) > MAX_METADATA_KEY_CHARS or "\\u0000" in metadata
    if metadata != "{}" and long_or_nul and not _plain_metadata(r):
        return None
    if sampling is not None:
        # JSON cannot hold NaN or infinity: orjson wrote them as null.
        if "null" in sampling:
            return None
        if '"stop"' in sampling and not _plain_stop(r):
            return None
    return row


def _plain_metadata(record: logger_pb2.RequestRecord) -> bool:
    metadata = record.metadata
    if len(metadata) > MAX_METADATA_ENTRIES:
        return False
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            return False
        if "\x00" in key or "\x00" in value:
            return False
    return True


def _plain_stop(record: logger_pb2.RequestRecord) -> bool:
    stop = record.sampling.stop
    if len(stop) > MAX_STOP_SEQUENCES:
        return False
    return all(len(sequence) <= MAX_STOP_CHARS and "\x00" not in sequence for sequence in stop)


def _check_request_id(request_id: str) -> str | None:
    if not request_id:
        return "request_id is required"
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in request_id):
        return "request_id contains control characters"
    return None


def _check_client_request_id(client_request_id: str) -> str | None:
    # Optional (records from older gateways have none), else held to the key's rules.
    if not client_request_id:
        return None
    reason = _check_request_id(client_request_id)
    return reason.replace("request_id", "client_request_id", 1) if reason else None


def _check_started_at(record: logger_pb2.RequestRecord) -> str | None:
    # Pagination and retention key on the start time, so a record without one cannot be placed.
    if not record.HasField("started_at"):
        return "started_at is required"
    stamp = record.started_at
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 1_000_000_000:
        return "started_at is outside the valid timestamp range"
    return None


def _check_texts(record: logger_pb2.RequestRecord) -> str | None:
    for name in _SHORT_TEXT_FIELDS:
        reason = _check_text(name, getattr(record, name), MAX_TEXT_CHARS)
        if reason:
            return reason
    for name in ("prompt", "response"):
        if "\x00" in getattr(record, name):
            return f"{name} contains a NUL character"
    return _check_text("error", record.error, MAX_ERROR_CHARS)


def _check_text(name: str, value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{name} is longer than {limit} characters"
    if "\x00" in value:
        return f"{name} contains a NUL character"
    return None


def _check_numbers(record: logger_pb2.RequestRecord) -> str | None:
    for name in _NON_NEGATIVE_FLOATS:
        value: float = getattr(record, name)
        if not math.isfinite(value) or value < 0:
            return f"{name} must be a finite number >= 0, got {value}"
    if record.attempts < 0:
        return f"attempts must be >= 0, got {record.attempts}"
    if record.fallbacks < 0:
        return f"fallbacks must be >= 0, got {record.fallbacks}"
    for name in _USAGE_FIELDS:
        count: int = getattr(record.usage, name)
        if count < 0:
            return f"usage.{name} must be >= 0, got {count}"
    if record.finish_reason not in _FINISH_REASONS:
        return f"finish_reason {record.finish_reason} is not a known FinishReason"
    return None


def _check_names(record: logger_pb2.RequestRecord) -> str | None:
    """Tool and feature names: a bounded list of short texts without NUL."""
    for name, values in (
        ("tools_offered", record.tools_offered),
        ("tools_called", record.tools_called),
        ("features", record.features),
    ):
        if len(values) > MAX_NAMES:
            return f"{name} has more than {MAX_NAMES} entries"
        for value in values:
            if len(value) > MAX_TEXT_CHARS or "\x00" in value:
                return f"{name} has an entry longer than {MAX_TEXT_CHARS} characters or with NUL"
    if record.usage.reasoning_tokens < 0:
        return "usage.reasoning_tokens is negative"
    return None


def _check_metadata(metadata: Mapping[str, str]) -> str | None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        return f"metadata has more than {MAX_METADATA_ENTRIES} entries"
    for key, value in metadata.items():
        reason = _check_text("metadata key", key, MAX_METADATA_KEY_CHARS) or _check_text(
            f"metadata[{key!r}]", value, MAX_METADATA_VALUE_CHARS
        )
        if reason:
            return reason
    return None


def _check_sampling(record: logger_pb2.RequestRecord) -> str | None:
    sampling = record.sampling
    for name in _SAMPLING_FLOATS:
        if sampling.HasField(name) and not math.isfinite(getattr(sampling, name)):
            return f"sampling.{name} must be a finite number"
    if len(sampling.stop) > MAX_STOP_SEQUENCES:
        return f"sampling.stop has more than {MAX_STOP_SEQUENCES} sequences"
    for stop in sampling.stop:
        reason = _check_text("sampling.stop", stop, MAX_STOP_CHARS)
        if reason:
            return reason
    return None
