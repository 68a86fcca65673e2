"""The logger's counters (served by GetStats): what came in, what was refused and why."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from hybridinference.common.spool import Spool
from hybridinference.logger.v1 import logger_pb2

_FIELD = re.compile(r"^[A-Za-z_.]+")


def reason_key(reason: str) -> str:
    """A low-cardinality key for a rejection reason: ``<field>:<kind>``."""
    if reason.startswith("record is not valid protobuf"):
        return "record:malformed"
    if reason.startswith("record is "):
        return "record:too_large"
    match = _FIELD.match(reason)
    name = match.group(0) if match else "record"
    if "is required" in reason:
        kind = "missing"
    elif "longer than" in reason or "more than" in reason:
        kind = "too_long"
    elif "NUL" in reason or "control characters" in reason:
        kind = "bad_characters"
    else:
        kind = "invalid"
    return f"{name}:{kind}"


@dataclass
class LoggerStats:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    truncated: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    duplicates: int = 0
    store_failures: int = 0
    spool_full: int = 0
    # Unexpected errors the drainer survived (it retries the batch, or restarts itself).
    drainer_errors: int = 0

    def to_proto(self, spool: Spool) -> logger_pb2.GetStatsResponse:
        return logger_pb2.GetStatsResponse(
            accepted=self.accepted,
            rejected=dict(self.rejected),
            truncated=dict(self.truncated),
            stored=self.stored,
            duplicates=self.duplicates,
            store_failures=self.store_failures,
            spool_records=spool.pending_records,
            spool_bytes=spool.pending_bytes,
            spool_full=self.spool_full,
        )
