"""Record validation and the WriteRecords contract (invalid entries rejected with reasons)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridinference.common.spool import Spool
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.capture import CapturePolicy
from hybridinference.logger.drain import SpoolDrainer
from hybridinference.logger.servicer import LoggerServicer
from hybridinference.logger.stats import LoggerStats
from hybridinference.logger.store import SqliteStore, StoreUnavailable
from hybridinference.logger.v1 import logger_pb2
from hybridinference.logger.validation import _plain_row, check_record, partition
from support.logger_records import make_record
from support.polling import until


def _with(**changes: Any) -> logger_pb2.RequestRecord:
    record = make_record(1)
    for name, value in changes.items():
        if name == "clear":
            record.ClearField(value)
        elif name == "metadata":
            record.metadata.update(value)
        elif name == "stop":
            record.sampling.stop.append(value)
        elif name == "temperature":
            record.sampling.temperature = value
        elif name == "prompt_tokens":
            record.usage.prompt_tokens = value
        else:
            setattr(record, name, value)
    return record


def test_valid_record_passes() -> None:
    assert check_record(make_record(1)) is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_with(request_id=""), "request_id is required"),
        (_with(request_id="x" * 129), "request_id is longer than 128"),
        (_with(request_id="a\nb"), "request_id contains control characters"),
        (_with(clear="started_at"), "started_at is required"),
        (_with(requested_model="m" * 257), "requested_model is longer than 256"),
        (_with(provider="a\x00b"), "provider contains a NUL"),
        (_with(error="e" * 20_000), "error is longer than 16384"),
        (_with(fallbacks=-1), "fallbacks must be >= 0"),
        (_with(prompt="a\x00"), "prompt contains a NUL"),
        (_with(latency_ms=-1.0), "latency_ms must be a finite number >= 0"),
        (_with(cost_usd=math.nan), "cost_usd must be a finite number"),
        (_with(attempts=-2), "attempts must be >= 0"),
        (_with(prompt_tokens=-5), "usage.prompt_tokens must be >= 0"),
        (_with(finish_reason=42), "finish_reason 42 is not a known"),
        (_with(metadata={f"k{i}": "v" for i in range(70)}), "more than 64 entries"),
        (_with(metadata={"k": "v" * 3000}), "metadata['k'] is longer than 2048"),
        (_with(stop="a\x00"), "sampling.stop contains a NUL"),
        (_with(temperature=math.inf), "sampling.temperature must be a finite number"),
        (_with(metadata={f"k{i}": "v" * 2000 for i in range(40)}), "bytes, more than"),
    ],
)
def test_invalid_records_are_rejected_with_a_reason(
    record: logger_pb2.RequestRecord, reason: str
) -> None:
    found = check_record(record)
    assert found is not None and reason in found
    # The fast path never lets through what the detailed checks refuse (the record size is
    # checked before either).
    assert reason == "bytes, more than" or _plain_row(record) is None


def test_partition_keeps_batch_positions() -> None:
    records = [make_record(0), _with(request_id=""), make_record(2), _with(attempts=-1)]
    valid, rejected = partition(records)
    assert [r.request_id for r in valid] == ["req-00000", "req-00002"]
    assert [r.index for r in rejected] == [1, 3]


@dataclass
class Logger:
    servicer: LoggerServicer
    store: SqliteStore
    spool: Spool
    stats: LoggerStats
    drainer: SpoolDrainer


@pytest.fixture
async def logger(tmp_path: Path) -> AsyncIterator[Logger]:
    store = await SqliteStore.open(str(tmp_path / "r.db"))
    spool = Spool.open(tmp_path / "spool", max_bytes=64 * 1024)
    stats = LoggerStats()
    rows = AttachedRows()
    drainer = SpoolDrainer(spool, rows, store, stats, batch_size=2, retry_max_s=0.05)
    capture = CapturePolicy(enabled=False, max_chars=10)
    servicer = LoggerServicer(store, spool, rows, stats, capture)
    yield Logger(servicer, store, spool, stats, drainer)
    await drainer.stop(timeout_s=1)
    await store.close()
    spool.close()


@pytest.fixture
def servicer(logger: Logger) -> LoggerServicer:
    return logger.servicer


async def _drained(logger: Logger) -> None:
    logger.drainer.start()
    await until(lambda: logger.spool.pending_records == 0, 10, "the spool to drain")


async def test_write_records_stores_valid_and_reports_invalid(logger: Logger) -> None:
    batch = [make_record(i) for i in range(5)]
    batch.insert(2, _with(request_id="y" * 200))
    batch.append(make_record(0))  # a replay inside the batch still counts as accepted
    request = logger_pb2.WriteRecordsRequest(records=batch)
    reply = await logger.servicer.WriteRecords(request, context=None)
    assert reply.accepted == 6
    assert [(r.index, r.reason) for r in reply.rejected] == [
        (2, "request_id is longer than 128 characters")
    ]
    assert logger.stats.rejected == {"request_id:too_long": 1}
    await _drained(logger)
    listed = await logger.servicer.ListRecords(
        logger_pb2.ListRecordsRequest(),
        context=None,
    )
    assert len(listed.records) == 5
    assert (logger.stats.stored, logger.stats.duplicates) == (5, 1)


class _AbortContext:
    """Just enough of grpc.aio.ServicerContext for the servicer's abort path."""

    def __init__(self) -> None:
        self.status: Any = None

    async def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise RuntimeError("aborted")


async def test_store_outage_still_acknowledges_and_writes_later(logger: Logger) -> None:
    real_insert, real_insert_rows = logger.store._insert, logger.store._insert_rows
    calls = 0

    async def broken(rows: Any) -> int:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("database went away")

    logger.store._insert = broken  # type: ignore[method-assign,assignment]
    logger.store._insert_rows = broken  # type: ignore[method-assign]
    logger.drainer.start()
    reply = await logger.servicer.WriteRecords(
        logger_pb2.WriteRecordsRequest(records=[make_record(i) for i in range(3)]),
        context=None,
    )
    assert reply.accepted == 3
    # The drainer keeps retrying while the records stay spooled.
    await until(lambda: calls >= 2, 10, "two failed writes")
    assert logger.spool.pending_records == 3
    assert logger.stats.store_failures >= 2
    logger.store._insert = real_insert  # type: ignore[method-assign]
    logger.store._insert_rows = real_insert_rows  # type: ignore[method-assign]
    await _drained(logger)
    assert logger.stats.stored == 3


async def test_full_spool_is_unavailable_with_retry_info(logger: Logger) -> None:
    big = [make_record(i, error="e" * 8000) for i in range(20)]
    context = _AbortContext()
    with pytest.raises(RuntimeError, match="aborted"):
        await logger.servicer.WriteRecords(
            logger_pb2.WriteRecordsRequest(records=big),
            context,
        )
    assert context.status.code == grpc.StatusCode.UNAVAILABLE
    assert "spool is full" in context.status.details
    assert logger.stats.spool_full == 1 and logger.stats.accepted == 0


async def test_capture_and_long_errors_are_cut_and_counted(logger: Logger) -> None:
    record = make_record(1, prompt="secret prompt", response="r", error="e" * 20_000)
    reply = await logger.servicer.WriteRecords(
        logger_pb2.WriteRecordsRequest(records=[record]),
        context=None,
    )
    assert reply.accepted == 1 and not reply.rejected
    assert logger.stats.truncated == {
        "prompt:capture_off": 1,
        "response:capture_off": 1,
        "error:truncated": 1,
    }
    await _drained(logger)
    stored = await logger.store.get("req-00001")
    assert stored is not None and stored.prompt == "" and len(stored.error) == 16_384


async def test_page_size_out_of_range(servicer: LoggerServicer) -> None:
    context = _AbortContext()
    with pytest.raises(RuntimeError, match="aborted"):
        await servicer.ListRecords(
            logger_pb2.ListRecordsRequest(page_size=5000),
            context,
        )
    assert context.status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in context.status.details
