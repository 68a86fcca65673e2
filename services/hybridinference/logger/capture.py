"""Field caps applied before validation: content capture and long error messages are cut, not
rejected, so the record itself (what was served, to whom, at what cost) is never lost to them."""

from __future__ import annotations

from dataclasses import dataclass

from hybridinference.common.record_limits import MAX_ERROR_CHARS
from hybridinference.logger.v1 import logger_pb2


@dataclass(frozen=True)
class CapturePolicy:
    # Whether prompt and response are stored at all.
    enabled: bool
    # Longest prompt or response stored, in characters.
    max_chars: int


def apply_caps(record: logger_pb2.RequestRecord, policy: CapturePolicy) -> list[str]:
    """Cuts or clears capped fields in place; returns a ``<field>:<why>`` key per change."""
    changes: list[str] = []
    for name in ("prompt", "response"):
        value: str = getattr(record, name)
        if not value:
            continue
        if not policy.enabled:
            record.ClearField(name)
            changes.append(f"{name}:capture_off")
        elif len(value) > policy.max_chars:
            setattr(record, name, value[: policy.max_chars])
            changes.append(f"{name}:truncated")
    if len(record.error) > MAX_ERROR_CHARS:
        record.error = record.error[:MAX_ERROR_CHARS]
        changes.append("error:truncated")
    return changes
