"""The gateway's shipper against an in-process LoggerService whose behaviour each test sets:
batches bounded by bytes, payloads the logger can never accept dead-lettered (never replayed),
spool failures survived, a full queue spilled to the spool, a dying task restarted."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from hybridinference.common.spool import SpoolWriteError
from hybridinference.gateway.shipper import RecordShipper
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.logger_records import make_record
from support.polling import until
from support.procs import free_port


@dataclass
class FakeLogger(logger_pb2_grpc.LoggerServiceServicer):
    """Stores what it accepts; ``refuse`` aborts a whole batch, ``reject`` rejects one record."""

    batches: list[list[logger_pb2.RequestRecord]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    refuse: Callable[[list[logger_pb2.RequestRecord]], bool] = lambda batch: False
    reject: Callable[[logger_pb2.RequestRecord], str] = lambda record: ""
    down: bool = False

    @property
    def stored(self) -> list[str]:
        return [r.request_id for batch in self.batches for r in batch]

    async def WriteRecords(
        self, request: logger_pb2.WriteRecordsRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.WriteRecordsResponse:
        records = list(request.records)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        if self.refuse(records):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cannot parse this batch")
        reply = logger_pb2.WriteRecordsResponse()
        kept = []
        for index, record in enumerate(records):
            reason = self.reject(record)
            if reason:
                reply.rejected.add(index=index, reason=reason)
            else:
                kept.append(record)
        self.batches.append(kept)
        self.sizes.append(request.ByteSize())
        reply.accepted = len(kept)
        return reply


@pytest.fixture
async def logger() -> AsyncIterator[tuple[FakeLogger, str]]:
    fake = FakeLogger()  # type: ignore[abstract]
    server = grpc.aio.server()
    logger_pb2_grpc.add_LoggerServiceServicer_to_server(fake, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    yield fake, address
    await server.stop(None)


def _shipper(address: str, tmp_path: Path, **overrides: object) -> RecordShipper:
    options: dict[str, object] = {
        "queue_size": 1000,
        "batch_size": 50,
        "flush_interval_s": 0.01,
        "spool_dir": str(tmp_path / "spool"),
    } | overrides
    shipper = RecordShipper(address, **options)
    shipper.backoff_max_s = 0.05
    return shipper


def _dead_letters(shipper: RecordShipper) -> list[dict[str, object]]:
    path = shipper.dead_letters.path
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_batches_are_bounded_by_bytes(logger: tuple[FakeLogger, str], tmp_path: Path) -> None:
    fake, address = logger
    shipper = _shipper(address, tmp_path, batch_max_bytes=32 * 1024)
    await shipper.start()
    for i in range(40):
        shipper.submit(make_record(i, error="e" * 8000))
    await until(lambda: len(fake.stored) == 40, 10, "every record stored")
    await shipper.close(timeout_s=5)
    # A batch stops once it reaches the bound: at most one record beyond it.
    assert max(fake.sizes) <= 32 * 1024 + 8200
    # 40 records of 8 KB in batches of at most ~40 KB: 8 batches, where by count it was one.
    assert len(fake.sizes) >= 8


async def test_a_refused_record_is_isolated_and_dead_lettered_never_replayed(
    logger: tuple[FakeLogger, str], tmp_path: Path
) -> None:
    fake, address = logger
    fake.refuse = lambda batch: any(r.user == "poison" for r in batch)
    shipper = _shipper(address, tmp_path)
    await shipper.start()
    for i in range(30):
        shipper.submit(make_record(i, user="poison" if i == 17 else f"user-{i}"))
    await until(lambda: len(fake.stored) == 29, 10, "the other 29 stored")
    await shipper.close(timeout_s=5)
    assert "req-00017" not in fake.stored
    (letter,) = _dead_letters(shipper)
    assert letter["request_id"] == "req-00017" and "INVALID_ARGUMENT" in str(letter["reason"])
    record = logger_pb2.RequestRecord.FromString(base64.b64decode(str(letter["record"])))
    assert record.user == "poison"
    assert shipper.dead_letters.counts == {"refused:INVALID_ARGUMENT": 1}
    assert shipper.spool_backlog == 0


async def test_a_rejected_record_is_dead_lettered_with_its_reason(
    logger: tuple[FakeLogger, str], tmp_path: Path
) -> None:
    fake, address = logger
    fake.reject = lambda r: "user contains a NUL character" if r.user == "bad" else ""
    shipper = _shipper(address, tmp_path)
    await shipper.start()
    for i in range(5):
        shipper.submit(make_record(i, user="bad" if i == 2 else "ok"))
    await until(lambda: len(fake.stored) == 4, 10, "the other 4 stored")
    await shipper.close(timeout_s=5)
    (letter,) = _dead_letters(shipper)
    assert (letter["request_id"], letter["reason"]) == (
        "req-00002",
        "user contains a NUL character",
    )


async def test_a_failing_spool_is_survived_and_nothing_is_lost(
    logger: tuple[FakeLogger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logger is down and the disk is full: the batch stays in memory and is retried; once
    the logger is back everything arrives."""
    fake, address = logger
    fake.down = True
    shipper = _shipper(address, tmp_path)
    await shipper.start()
    assert shipper._spool is not None

    async def full(payloads: object) -> list[tuple[int, int]]:
        raise SpoolWriteError("no space left on device")

    monkeypatch.setattr(shipper._spool, "append", full)
    for i in range(20):
        shipper.submit(make_record(i))
    await until(lambda: shipper.spool_errors >= 2, 10, "spool writes failing")
    fake.down = False
    await until(lambda: len(fake.stored) == 20, 10, "every record stored once the logger is back")
    await shipper.close(timeout_s=5)
    assert (shipper.dropped, shipper.abandoned) == (0, 0)


async def test_a_full_queue_spills_to_the_spool_instead_of_dropping(
    logger: tuple[FakeLogger, str], tmp_path: Path
) -> None:
    fake, address = logger
    shipper = _shipper(address, tmp_path, queue_size=5)
    await shipper.start()
    # No await in between: the queue fills at once and the rest spills.
    for i in range(200):
        shipper.submit(make_record(i))
    await until(lambda: len(set(fake.stored)) == 200, 15, "every record stored")
    await shipper.close(timeout_s=5)
    assert shipper.dropped == 0 and shipper.spilled > 0


async def test_a_dying_task_is_restarted_and_its_batch_delivered(
    logger: tuple[FakeLogger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, address = logger
    shipper = _shipper(address, tmp_path)
    deliver = shipper._deliver
    deaths = iter([True])

    async def dies_once(batch: list[logger_pb2.RequestRecord]) -> None:
        if next(deaths, False):
            raise RuntimeError("a bug")
        await deliver(batch)

    monkeypatch.setattr(shipper, "_deliver", dies_once)
    await shipper.start()
    for i in range(10):
        shipper.submit(make_record(i))
    await until(lambda: len(fake.stored) == 10, 10, "every record stored")
    assert shipper.restarts["ship"] == 1
    await shipper.close(timeout_s=5)


async def test_a_batch_that_kills_the_task_twice_is_dead_lettered(
    logger: tuple[FakeLogger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, address = logger
    shipper = _shipper(address, tmp_path)
    deliver = shipper._deliver

    async def dies_on_poison(batch: list[logger_pb2.RequestRecord]) -> None:
        if any(r.user == "poison" for r in batch):
            raise RuntimeError("a bug this record triggers")
        await deliver(batch)

    monkeypatch.setattr(shipper, "_deliver", dies_on_poison)
    await shipper.start()
    shipper.submit(make_record(1, user="poison"))
    await until(lambda: shipper.dead_letters.total == 1, 10, "the poison batch dead-lettered")
    shipper.submit(make_record(2))
    await until(lambda: fake.stored == ["req-00002"], 10, "the next record stored")
    assert shipper.restarts["ship"] == 2
    await shipper.close(timeout_s=5)
