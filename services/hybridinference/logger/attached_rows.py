"""The rows the servicer made from records it spooled, kept in memory for the drainer.

The logger validates each record and turns it into a database row before it spools the record;
keeping that row by its frame's position spares the drainer decoding and converting the record a
second time. Memory only and bounded: after a restart, or beyond the bound, the drainer gets None
for a frame and decodes its payload.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from hybridinference.common.spool import FramePosition, SpoolBatch
from hybridinference.logger.rows import Row

# Memory the rows of frames not yet consumed may take, estimated as the payload's size plus
# ROW_OVERHEAD_BYTES per frame (a logger row of a 200-byte record takes about 1.2 KB).
ATTACHED_MAX_BYTES = 128 << 20
ROW_OVERHEAD_BYTES = 1024


class AttachedRows:
    """Used by one writer and one reader on one event loop, like the spool itself."""

    def __init__(self, max_bytes: int = ATTACHED_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        # Frame position -> (its row, its estimated size), oldest first; and their sum.
        self._rows: OrderedDict[FramePosition, tuple[Row, int]] = OrderedDict()
        self._bytes = 0

    def add(
        self, positions: Sequence[FramePosition], payloads: Sequence[bytes], rows: Sequence[Row]
    ) -> None:
        """Keeps the rows of one appended batch, all or none (beyond the bound: none)."""
        sizes = [len(payload) + ROW_OVERHEAD_BYTES for payload in payloads]
        cost = sum(sizes)
        if self._bytes + cost > self.max_bytes:
            return
        self._bytes += cost
        self._rows.update(zip(positions, zip(rows, sizes, strict=True), strict=True))

    def of(self, batch: SpoolBatch) -> list[Row | None]:
        """The kept row of each frame of the batch, None where there is none."""
        if not self._rows:
            return [None] * len(batch.positions)
        get = self._rows.get
        return [entry[0] if (entry := get(p)) is not None else None for p in batch.positions]

    def release(self, batch: SpoolBatch) -> None:
        """Forgets the rows of frames before the committed batch's end."""
        rows = self._rows
        while rows and next(iter(rows)) < batch.end:
            self._bytes -= rows.popitem(last=False)[1][1]
