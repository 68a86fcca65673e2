"""The spool under faults: short writes and a disk that fills part-way leave no torn frame, an
oversized frame is refused before anything is written, and a torn frame anywhere is skipped past
(with the rest of its segment), never read again and again."""

from __future__ import annotations

import errno
import os
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybridinference.common.spool import (
    MAX_PAYLOAD_BYTES,
    FrameTooLarge,
    Spool,
    SpoolWriteError,
)


def _payloads(start: int, count: int) -> list[bytes]:
    return [f"record-{i:05d}".encode() * 3 for i in range(start, start + count)]


def _drain(spool: Spool, batch: int = 7) -> list[bytes]:
    seen: list[bytes] = []
    while True:
        got = spool.read(batch)
        if not got.payloads:
            return seen
        seen.extend(got.payloads)
        spool.commit(got)


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A read that loops on a torn frame fails the test instead of hanging it."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError("the spool looped instead of skipping the torn frame")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _writer(plan: list[int | OSError]) -> Callable[[int, memoryview], int]:
    """os.write that writes at most the planned byte counts, or raises, then behaves."""

    def write(fd: int, data: memoryview) -> int:
        if not plan:
            return os.write(fd, data)
        step = plan.pop(0)
        if isinstance(step, OSError):
            raise step
        return os.write(fd, data[:step])

    return write


async def test_a_short_write_is_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    monkeypatch.setattr(spool, "_os_write", _writer([5, 3, 1]))
    await spool.append(_payloads(0, 4))
    assert _drain(spool) == _payloads(0, 4)
    spool.close()


async def test_a_disk_full_part_way_keeps_no_torn_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    await spool.append(_payloads(0, 2))
    monkeypatch.setattr(spool, "_os_write", _writer([30, OSError(errno.ENOSPC, "full")]))
    with pytest.raises(SpoolWriteError, match="cannot write"):
        await spool.append(_payloads(2, 3))
    assert spool.pending_records == 2
    # The disk has room again: appends go on, and nothing of the failed write is ever read.
    await spool.append(_payloads(5, 2))
    assert _drain(spool) == _payloads(0, 2) + _payloads(5, 2)
    spool.close()
    reopened = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    assert reopened.corrupt_frames == 0 and reopened.pending_records == 0
    reopened.close()


async def test_an_oversized_frame_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=64 << 20)
    with pytest.raises(FrameTooLarge):
        await spool.append([b"ok", b"x" * (MAX_PAYLOAD_BYTES + 1)])
    assert spool.pending_records == 0 and spool.pending_bytes == 0
    spool.close()


def _tear(path: Path, offset: int, header: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(header)


@pytest.mark.parametrize(
    "header",
    [
        # A length running past the end of the segment (a torn frame).
        struct.pack("<II", 1 << 30, 0),
        # A length that fits but a checksum that does not match (damage).
        struct.pack("<II", 10, 12345),
    ],
)
async def test_a_torn_frame_in_an_earlier_segment_is_skipped_live_and_at_open(
    tmp_path: Path, header: bytes
) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    await spool.append(_payloads(0, 5))  # segment 1, past segment_bytes
    await spool.append(_payloads(5, 3))  # segment 2
    first = sorted((tmp_path / "s").glob("*.seg"))[0]
    frame = 8 + len(_payloads(0, 1)[0])
    _tear(first, 2 * frame, header)
    got = _drain(spool)
    assert got == _payloads(0, 2) + _payloads(5, 3)
    assert spool.corrupt_frames == 1
    spool.close()


async def test_a_torn_frame_found_at_open_is_skipped_once(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    await spool.append(_payloads(0, 5))
    await spool.append(_payloads(5, 3))
    spool.close()
    first = sorted((tmp_path / "s").glob("*.seg"))[0]
    _tear(first, 8 + len(_payloads(0, 1)[0]), struct.pack("<II", 1 << 30, 0))
    reopened = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    assert _drain(reopened) == _payloads(0, 1) + _payloads(5, 3)
    assert reopened.pending_records == 0
    reopened.close()


async def test_a_few_stray_bytes_at_a_segment_end_are_skipped(tmp_path: Path) -> None:
    """Fewer bytes than a frame header after the last whole frame of an earlier segment."""
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    await spool.append(_payloads(0, 5))
    await spool.append(_payloads(5, 1))
    first = sorted((tmp_path / "s").glob("*.seg"))[0]
    with first.open("ab") as handle:
        handle.write(b"\x01\x02\x03")
    spool._sizes[int(first.stem)] += 3  # as if it had been written by this process
    assert _drain(spool) == _payloads(0, 6)
    spool.close()
