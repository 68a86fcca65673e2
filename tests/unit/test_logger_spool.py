"""The on-disk spool: durable appends, at-least-once reads, recovery, size bound, exclusivity."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridinference.common.spool import Spool, SpoolError, SpoolFull


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


async def test_append_read_commit(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    await spool.append(_payloads(0, 10))
    first = spool.read(4)
    assert first.payloads == _payloads(0, 4)
    # Without a commit the same records come back (the consumer failed and retries).
    assert spool.read(4).payloads == _payloads(0, 4)
    spool.commit(first)
    assert spool.pending_records == 6
    assert _drain(spool) == _payloads(4, 6)
    assert spool.pending_records == 0 and spool.pending_bytes == 0
    spool.close()


async def test_read_ahead_of_uncommitted_batches(tmp_path: Path) -> None:
    # Small segments: the read-ahead crosses segment boundaries.
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    for start in range(0, 30, 5):
        await spool.append(_payloads(start, 5))
    first = spool.read(8)
    second = spool.read(8, first.end)
    third = spool.read(100, second.end)
    assert first.payloads + second.payloads + third.payloads == _payloads(0, 30)
    assert not spool.read(8, third.end).payloads
    # Nothing was consumed; commits in order move the cursor batch by batch.
    assert spool.pending_records == 30
    spool.commit(first)
    spool.commit(second)
    assert spool.pending_records == 14
    assert spool.read(100).payloads == third.payloads
    spool.commit(third)
    assert spool.pending_records == 0 and not spool.read(8).payloads
    spool.close()


async def test_append_returns_the_positions_reads_hand_back(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    positions = await spool.append(_payloads(0, 4))
    positions += await spool.append(_payloads(4, 5))
    first = spool.read(5)
    rest = spool.read(100, first.end)
    assert len(set(positions)) == 9 and first.positions + rest.positions == positions
    spool.close()


async def test_unconsumed_records_survive_reopen(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    await spool.append(_payloads(0, 30))
    spool.commit(spool.read(12))
    spool.close()
    reopened = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=200)
    assert reopened.pending_records == 18
    assert _drain(reopened) == _payloads(12, 18)
    await reopened.append(_payloads(100, 2))
    assert _drain(reopened) == _payloads(100, 2)
    reopened.close()
    # Consumed segments are deleted as the cursor passes them.
    assert len(list((tmp_path / "s").glob("*.seg"))) <= 2


async def test_torn_tail_is_cut_and_later_appends_are_readable(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    await spool.append(_payloads(0, 3))
    spool.close()
    segment = next((tmp_path / "s").glob("*.seg"))
    with segment.open("ab") as handle:
        handle.write(b"\x50\x00\x00\x00\x01\x02")  # a header promising 80 bytes, then a crash
    reopened = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    assert reopened.pending_records == 3
    await reopened.append(_payloads(3, 1))
    assert _drain(reopened) == _payloads(0, 4)
    reopened.close()


async def test_corrupt_frame_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=50)
    await spool.append(_payloads(0, 2))
    await spool.append(_payloads(2, 2))  # a second segment (the first passed 50 bytes)
    spool.close()
    first = sorted((tmp_path / "s").glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[10] ^= 0xFF
    first.write_bytes(bytes(data))
    reopened = Spool.open(tmp_path / "s", max_bytes=1 << 20, segment_bytes=50)
    assert reopened.corrupt_frames == 1
    assert _drain(reopened) == _payloads(2, 2)
    reopened.close()


async def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=200)
    await spool.append(_payloads(0, 4))
    with pytest.raises(SpoolFull, match="limit 200"):
        await spool.append(_payloads(4, 4))
    assert _drain(spool) == _payloads(0, 4)
    await spool.append(_payloads(4, 4))  # room again once consumed
    spool.close()


async def test_one_process_per_spool(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool.open(tmp_path / "s", max_bytes=1 << 20)
    spool.close()
    Spool.open(tmp_path / "s", max_bytes=1 << 20).close()


async def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match="cannot open spool"):
        Spool.open(blocker / "s", max_bytes=1 << 20)


async def test_concurrent_appends_share_fsyncs_and_all_arrive(tmp_path: Path) -> None:
    import asyncio

    spool = Spool.open(tmp_path / "s", max_bytes=1 << 24, segment_bytes=4096)
    await asyncio.gather(*(spool.append(_payloads(i * 10, 10)) for i in range(50)))
    assert sorted(_drain(spool, batch=33)) == sorted(_payloads(0, 500))
    spool.close()


async def test_empty_spool_can_remove_itself(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    await spool.append(_payloads(0, 1))
    spool.close(remove_if_empty=True)
    assert (tmp_path / "s").is_dir()  # something pending: kept
    spool = Spool.open(tmp_path / "s", max_bytes=1 << 20)
    _drain(spool)
    spool.close(remove_if_empty=True)
    assert not (tmp_path / "s").exists()
