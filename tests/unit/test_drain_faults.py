"""The logger's drainer under database faults: a batch the database will always refuse is split
until the refused row stands alone (dead-lettered with its reason, the rest stored), and an
unexpected error never stops the drainer."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hybridinference.common.spool import Spool
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.capture import CapturePolicy
from hybridinference.logger.drain import SpoolDrainer
from hybridinference.logger.servicer import LoggerServicer
from hybridinference.logger.stats import LoggerStats
from hybridinference.logger.store import SqliteStore
from hybridinference.logger.v1 import logger_pb2
from support.logger_records import make_record
from support.polling import until


@dataclass
class Logger:
    servicer: LoggerServicer
    store: SqliteStore
    spool: Spool
    stats: LoggerStats
    drainer: SpoolDrainer
    db: Path


@pytest.fixture
async def logger(tmp_path: Path) -> AsyncIterator[Logger]:
    db = tmp_path / "r.db"
    store = await SqliteStore.open(str(db))
    spool = Spool.open(tmp_path / "spool", max_bytes=16 << 20)
    stats = LoggerStats()
    rows = AttachedRows()
    drainer = SpoolDrainer(spool, rows, store, stats, batch_size=50, retry_max_s=0.05)
    servicer = LoggerServicer(store, spool, rows, stats, CapturePolicy(enabled=False, max_chars=10))
    # A row the database will always refuse, as a CHECK constraint would in PostgreSQL.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON request_log "
            "WHEN NEW.\"user\" = 'poison' BEGIN SELECT RAISE(ABORT, 'poison is refused'); END"
        )
    drainer.start()
    yield Logger(servicer, store, spool, stats, drainer, db)
    await drainer.stop(timeout_s=1)
    await store.close()
    spool.close()


def _stored(logger: Logger) -> set[str]:
    with sqlite3.connect(logger.db) as conn:
        return {str(r[0]) for r in conn.execute("SELECT request_id FROM request_log")}


async def _write(logger: Logger, records: list[logger_pb2.RequestRecord]) -> None:
    request = logger_pb2.WriteRecordsRequest(records=records)
    context: Any = None
    reply = await logger.servicer.WriteRecords(request, context)
    assert reply.accepted == len(records)


@pytest.mark.parametrize("attached", [True, False])
async def test_a_refused_row_is_isolated_dead_lettered_and_the_rest_stored(
    logger: Logger, attached: bool
) -> None:
    records = [make_record(i, user="poison" if i in (13, 31) else f"u{i}") for i in range(40)]
    if attached:
        await _write(logger, records)
    else:
        # As after a restart: nothing attached, the drainer decodes the spool.
        await logger.spool.append([r.SerializeToString() for r in records])
    want = {r.request_id for r in records} - {"req-00013", "req-00031"}
    await until(lambda: _stored(logger) == want, 10, "the 38 other rows stored")
    await until(lambda: logger.spool.pending_records == 0, 10, "the spool drained")
    assert logger.stats.rejected["store:rejected"] == 2
    path = logger.drainer.dead_letters.path
    assert path is not None
    letters = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(letter["request_id"] for letter in letters) == ["req-00013", "req-00031"]
    assert all("poison is refused" in letter["reason"] for letter in letters)


async def test_an_unexpected_error_is_retried_and_the_drainer_survives(
    logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_rows = logger.store.write_rows
    failures = iter([RuntimeError("a bug"), RuntimeError("again")])

    async def flaky(rows: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return await write_rows(rows)

    monkeypatch.setattr(logger.store, "write_rows", flaky)
    await _write(logger, [make_record(i) for i in range(5)])
    await until(lambda: len(_stored(logger)) == 5, 10, "the rows stored after the errors")
    assert logger.stats.drainer_errors == 2


async def test_a_drain_loop_that_dies_is_restarted(
    logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = logger.spool.read
    deaths = iter([True])

    def dies_once(*args: Any, **kwargs: Any) -> Any:
        if next(deaths, False):
            raise RuntimeError("the loop dies")
        return read(*args, **kwargs)

    monkeypatch.setattr(logger.spool, "read", dies_once)
    await _write(logger, [make_record(i) for i in range(3)])
    await until(lambda: len(_stored(logger)) == 3, 10, "the rows stored after the restart")
    assert logger.stats.drainer_errors >= 1
