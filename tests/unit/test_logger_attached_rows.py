"""The logger's in-memory rows of spooled frames: handed back by position, bounded, memory only."""

from __future__ import annotations

from pathlib import Path

from hybridinference.common.spool import Spool
from hybridinference.logger.attached_rows import ROW_OVERHEAD_BYTES, AttachedRows
from hybridinference.logger.rows import Row, record_to_row
from hybridinference.logger.v1 import logger_pb2


def _payloads(start: int, count: int) -> list[bytes]:
    return [f"record-{i:05d}".encode() * 3 for i in range(start, start + count)]


def _rows(start: int, count: int) -> list[Row]:
    return [
        record_to_row(logger_pb2.RequestRecord(request_id=f"row-{i}"))
        for i in range(start, start + count)
    ]


def _ids(rows: list[Row | None]) -> list[str | None]:
    return [row.request_id if row is not None else None for row in rows]


async def _append(spool: Spool, rows: AttachedRows | None, start: int, count: int) -> None:
    payloads = _payloads(start, count)
    positions = await spool.append(payloads)
    if rows is not None:
        rows.add(positions, payloads, _rows(start, count))


async def test_rows_come_back_with_their_frames(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    rows = AttachedRows()
    await _append(spool, rows, 0, 4)
    await _append(spool, None, 4, 2)
    await _append(spool, rows, 6, 3)
    first = spool.read(5)
    rest = spool.read(100, first.end)
    assert _ids(rows.of(first)) == ["row-0", "row-1", "row-2", "row-3", None]
    assert _ids(rows.of(rest)) == [None, "row-6", "row-7", "row-8"]
    spool.commit(first)
    rows.release(first)
    assert _ids(rows.of(spool.read(100))) == _ids(rows.of(rest))
    spool.close()
    # Memory only: after a restart the reader has the payloads alone.
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    again = spool.read(100)
    assert again.payloads == _payloads(5, 4) and AttachedRows().of(again) == [None] * 4
    spool.close()


async def test_rows_are_bounded(tmp_path: Path) -> None:
    # Room for five of these frames (each is 36 bytes plus the per-frame estimate).
    rows = AttachedRows(max_bytes=5 * (36 + ROW_OVERHEAD_BYTES))
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    await _append(spool, rows, 0, 3)
    # Would hold 6: kept on disk only.
    await _append(spool, rows, 3, 3)
    batch = spool.read(2)
    assert _ids(rows.of(batch)) == ["row-0", "row-1"]
    spool.commit(batch)
    rows.release(batch)
    await _append(spool, rows, 6, 3)
    assert _ids(rows.of(spool.read(100))) == ["row-2", None, None, None, "row-6", "row-7", "row-8"]
    spool.close()
