"""Caps a request record to the shared limits (common/record_limits.py) as the gateway builds it.

Whatever a client sent, and whether or not it was authenticated or valid, its record is one the
logger stores: NUL characters are removed, long fields cut, surplus metadata entries and stop
sequences dropped, non-finite numbers cleared, and the whole record kept under the size limit.
A refused request (400, 401) with a huge body still leaves a small record, never a huge one or
none. Each change is counted by field (``hi_gateway_record_caps_total``), so an operator can see
that records were cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hybridinference.common.record_limits import (
    MAX_ERROR_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    MAX_RECORD_BYTES,
    MAX_REQUEST_ID_CHARS,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEXT_CHARS,
    NUL,
    SHORT_TEXT_FIELDS,
)
from hybridinference.logger.v1 import logger_pb2

_SAMPLING_FLOATS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_NUMBERS = ("ttft_ms", "latency_ms", "cost_usd")
# Error text kept when the record is still too large after the other cuts.
_ERROR_FLOOR_CHARS = 1024

Note = Callable[[str], None]


def _fit(value: str, limit: int) -> tuple[str, bool]:
    cut = value.replace(NUL, "") if NUL in value else value
    if len(cut) > limit:
        cut = cut[:limit]
    return cut, cut != value


def _id(value: str) -> str:
    # Ids come from the gateway or a header it checked; a control character cannot get here, so
    # only the length is a backstop.
    return value[:MAX_REQUEST_ID_CHARS]


# Bytes a record holds besides its text: ids' and fields' tags and lengths, numbers, usage,
# timestamps, sampling numbers. Generous: it only decides whether ByteSize must be computed.
_FIXED_BYTES_BOUND = 2048


def within_limits(record: logger_pb2.RequestRecord, capture_max_chars: int) -> bool:
    """True when nothing needs cutting, found with as few protobuf reads as possible: this runs
    once per request, and almost every record passes. May say False for a record that needs no
    cut (the full pass then finds nothing), never True for one that does."""
    r = record
    texts = [getattr(r, name) for name in SHORT_TEXT_FIELDS]
    if max(map(len, texts)) > MAX_TEXT_CHARS:
        return False
    ids = r.request_id + r.client_request_id
    error = r.error
    joined = "".join(texts) + ids + error
    if NUL in joined or len(error) > MAX_ERROR_CHARS or len(ids) > 2 * MAX_REQUEST_ID_CHARS:
        return False
    chars = len(joined)
    metadata = r.metadata
    if metadata:
        if len(metadata) > MAX_METADATA_ENTRIES:
            return False
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
                return False
            if NUL in key or NUL in value:
                return False
            chars += len(key) + len(value) + 4
    # An unset sampling message or float reads as empty / 0.0: no HasField calls needed.
    sampling = r.sampling
    stop = sampling.stop
    if stop:
        if len(stop) > MAX_STOP_SEQUENCES:
            return False
        for sequence in stop:
            if len(sequence) > MAX_STOP_CHARS or NUL in sequence:
                return False
            chars += len(sequence) + 2
    if not all(math.isfinite(getattr(sampling, name)) for name in _SAMPLING_FLOATS):
        return False
    for name in _NUMBERS:
        number: float = getattr(r, name)
        if not (math.isfinite(number) and number >= 0):
            return False
    for name in ("prompt", "response"):
        content: str = getattr(r, name)
        if content and (len(content) > capture_max_chars or NUL in content):
            return False
    # At most 4 UTF-8 bytes per character: only a record that might be too large is measured.
    if chars * 4 + _FIXED_BYTES_BOUND > MAX_RECORD_BYTES:
        captured = len(r.prompt.encode()) + len(r.response.encode())
        return r.ByteSize() - captured <= MAX_RECORD_BYTES
    return True


def cap_record(
    record: logger_pb2.RequestRecord, capture_max_chars: int, note: Note | None = None
) -> logger_pb2.RequestRecord:
    """Caps ``record`` in place and returns it; ``note`` is told each capped field's name."""
    if not within_limits(record, capture_max_chars):
        cut_to_limits(record, capture_max_chars, note or _ignore)
    return record


def _ignore(name: str) -> None:
    pass


def cut_to_limits(record: logger_pb2.RequestRecord, capture_max_chars: int, changed: Note) -> None:
    """The full pass: cuts every field over its limit, telling ``changed`` each one's name."""
    record.request_id = _id(record.request_id)
    record.client_request_id = _id(record.client_request_id)
    for name in SHORT_TEXT_FIELDS:
        value, cut = _fit(getattr(record, name), MAX_TEXT_CHARS)
        if cut:
            setattr(record, name, value)
            changed(name)
    record.error, cut = _fit(record.error, MAX_ERROR_CHARS)
    if cut:
        changed("error")
    for name in ("prompt", "response"):
        value, cut = _fit(getattr(record, name), capture_max_chars)
        if cut:
            setattr(record, name, value)
            changed(name)
    _cap_metadata(record, changed)
    _cap_sampling(record, changed)
    for name in _NUMBERS:
        number: float = getattr(record, name)
        if not (math.isfinite(number) and number >= 0):
            setattr(record, name, 0.0)
            changed(name)
    _cap_size(record, changed)


def _cap_metadata(record: logger_pb2.RequestRecord, changed: Note) -> None:
    metadata = record.metadata
    if not metadata:
        return
    clean = all(
        len(k) <= MAX_METADATA_KEY_CHARS
        and len(v) <= MAX_METADATA_VALUE_CHARS
        and NUL not in k
        and NUL not in v
        for k, v in metadata.items()
    )
    if clean and len(metadata) <= MAX_METADATA_ENTRIES:
        return
    kept: dict[str, str] = {}
    # Sorted, so which entries survive does not depend on the map's order.
    for key in sorted(metadata):
        if len(kept) == MAX_METADATA_ENTRIES:
            break
        short_key, _ = _fit(key, MAX_METADATA_KEY_CHARS)
        if short_key and short_key not in kept:
            kept[short_key] = _fit(metadata[key], MAX_METADATA_VALUE_CHARS)[0]
    metadata.clear()
    metadata.update(kept)
    changed("metadata")


def _cap_sampling(record: logger_pb2.RequestRecord, changed: Note) -> None:
    if not record.HasField("sampling"):
        return
    sampling = record.sampling
    for name in _SAMPLING_FLOATS:
        if sampling.HasField(name) and not math.isfinite(getattr(sampling, name)):  # type: ignore[arg-type]
            sampling.ClearField(name)  # type: ignore[arg-type]
            changed(f"sampling.{name}")
    stop = list(sampling.stop)
    capped = [_fit(s, MAX_STOP_CHARS)[0] for s in stop[:MAX_STOP_SEQUENCES]]
    if capped != stop:
        del sampling.stop[:]
        sampling.stop.extend(capped)
        changed("sampling.stop")


def _cap_size(record: logger_pb2.RequestRecord, changed: Note) -> None:
    """Every field is within its limit, yet together they may not be (64 metadata values of
    2,048 four-byte characters): cut the largest parts until the record fits."""

    def size() -> int:
        captured = len(record.prompt.encode()) + len(record.response.encode())
        return record.ByteSize() - captured

    if size() <= MAX_RECORD_BYTES:
        return
    changed("record")
    # Metadata first (the client's), then stop sequences, then the error text.
    for key in sorted(record.metadata, key=lambda k: -len(record.metadata[k]) - len(k)):
        del record.metadata[key]
        if size() <= MAX_RECORD_BYTES:
            return
    if record.HasField("sampling"):
        del record.sampling.stop[:]
        if size() <= MAX_RECORD_BYTES:
            return
    record.error = record.error[:_ERROR_FLOOR_CHARS]
