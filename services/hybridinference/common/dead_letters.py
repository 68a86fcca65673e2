"""Request records that can never be stored, kept aside instead of retried forever.

The gateway's shipper puts here a record the logger rejects (its reason says why), one isolated
from a batch the logger refuses outright, or one too large to spool; the logger's drainer one
isolated from a batch the database will always refuse. Each is one JSON line in
``<spool dir>.dead-letters.jsonl`` (beside the spool, whose directory may be deleted when empty),
with the reason, its ids and the record itself (base64 of its protobuf bytes, so nothing is lost
and it can be replayed by hand once the cause is fixed), up to a size bound; every one is counted
by reason (metrics of each service) and logged.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections import Counter
from pathlib import Path

import orjson

from hybridinference.logger.v1 import logger_pb2

log = logging.getLogger(__name__)

# Above this the file stops growing (records are still counted and logged).
MAX_FILE_BYTES = 256 << 20
# A record larger than this is noted without its bytes.
MAX_KEPT_RECORD_BYTES = 1 << 20


class DeadLetters:
    def __init__(self, path: Path | None, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.path = path
        self._max_file_bytes = max_file_bytes
        # Records dead-lettered, by reason (a short, bounded label: see ``reason_label``).
        self.counts: Counter[str] = Counter()

    @classmethod
    def beside(cls, spool_dir: str | None) -> DeadLetters:
        if not spool_dir:
            return cls(None)
        directory = Path(spool_dir)
        return cls(directory.parent / f"{directory.name}.dead-letters.jsonl")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, payload: bytes, label: str, reason: str) -> None:
        """Keeps one serialized record with why it can never be delivered; never raises."""
        self.counts[label] += 1
        request_id = client_id = ""
        try:
            record = logger_pb2.RequestRecord.FromString(payload)
            request_id, client_id = record.request_id, record.client_request_id
        except Exception:
            pass
        log.error(
            "request record dead-lettered",
            extra={"reason": reason, "request_id": request_id, "file": str(self.path or "")},
        )
        if self.path is None:
            return
        line = orjson.dumps(
            {
                "at": time.time(),
                "reason": reason,
                "request_id": request_id,
                "client_request_id": client_id,
                "record": base64.b64encode(payload).decode()
                if len(payload) <= MAX_KEPT_RECORD_BYTES
                else None,
                "bytes": len(payload),
            }
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size + len(line) > self._max_file_bytes:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
        except OSError as error:
            log.error("cannot write the dead-letter file", extra={"error": str(error)})
