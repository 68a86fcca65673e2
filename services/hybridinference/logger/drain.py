"""Moves acknowledged records from the spool into the database, in batches, at least once.

A batch leaves the spool only after the store committed it and every batch before it; a failed
write is retried with capped backoff, for as long as the database is away, while the servicer
keeps acknowledging new records into the spool. A crash between commit and cursor update replays
the batch: the store's idempotent insert makes that harmless.

A batch the database will always refuse (StoreRejected: a row breaks a constraint or a type) is
split in halves, and those again, until the rows it refuses are isolated: each is dead-lettered
(common/dead_letters.py, beside the spool) with the database's reason and counted as rejected
(``store:rejected``), and every other row is stored. Any other error is retried as transient, and
the drainer restarts itself if it dies of an unexpected one: it never stops draining.

Two batches are written at once (two connections): while the database stores one, this process
reads the next from the spool (its rows come attached from the servicer; only what was not
attached, e.g. after a restart, is decoded and converted) and acknowledges new records, so the
server's core and this one work at the same time instead of taking turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import cast

from google.protobuf.message import DecodeError

from hybridinference.common.dead_letters import DeadLetters
from hybridinference.common.spool import Spool, SpoolBatch
from hybridinference.logger import metrics as logger_metrics
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.rows import Row
from hybridinference.logger.stats import LoggerStats
from hybridinference.logger.store import RecordStore, StoreRejected, StoreUnavailable, WriteResult
from hybridinference.logger.v1 import logger_pb2

log = logging.getLogger(__name__)


class SpoolDrainer:
    backoff_initial_s: float = 0.05
    # Batches written concurrently.
    _depth: int = 2

    def __init__(
        self,
        spool: Spool,
        rows: AttachedRows,
        store: RecordStore,
        stats: LoggerStats,
        batch_size: int,
        retry_max_s: float,
    ) -> None:
        self._spool = spool
        self._rows = rows
        self._store = store
        self._stats = stats
        self._batch_size = batch_size
        self._retry_max_s = retry_max_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        # Set while the spool is empty and the drainer waits for more.
        self._caught_up = asyncio.Event()
        self.dead_letters = DeadLetters.beside(str(spool.directory))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="spool-drainer")

    async def stop(self, timeout_s: float) -> None:
        """Lets the backlog drain for up to ``timeout_s``; what is left stays in the spool."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._spool.pending_records:
            log.warning(
                "stopping with records still spooled; they are written at the next start",
                extra={"records": self._spool.pending_records},
            )

    async def _supervise(self) -> None:
        """Runs the drain loop forever: if it dies of an unexpected error, it starts again."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._stats.drainer_errors += 1
                log.exception("spool drainer died; restarting it")
                await asyncio.sleep(self.backoff_initial_s)

    async def _run(self) -> None:
        delay = self.backoff_initial_s
        # Batches being written, oldest first; each leaves the spool once it and every batch
        # before it are committed.
        in_flight: deque[tuple[SpoolBatch, asyncio.Task[bool]]] = deque()
        try:
            while True:
                while len(in_flight) < self._depth:
                    batch = self._spool.read(
                        self._batch_size, in_flight[-1][0].end if in_flight else None
                    )
                    if not batch.payloads:
                        break
                    in_flight.append((batch, asyncio.create_task(self._write(batch))))
                if not in_flight:
                    self._caught_up.set()
                    await self._spool.wait_for_data()
                    self._caught_up.clear()
                    continue
                batch, task = in_flight.popleft()
                if await task:
                    self._spool.commit(batch)
                    self._rows.release(batch)
                    delay = self.backoff_initial_s
                    continue
                # The later batches are let finish and read again after the pause: whatever
                # they stored is skipped as a replay.
                for _, later in in_flight:
                    await later
                in_flight.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        finally:
            for _, task in in_flight:
                task.cancel()

    async def _write(self, batch: SpoolBatch) -> bool:
        """Stores the batch; False when it should be tried again later (stays spooled)."""
        started = time.perf_counter()
        try:
            rows = self._rows.of(batch)
            if None not in rows:
                # The servicer's rows of these records (AttachedRows): nothing to decode. The
                # common case stays one call; only a refused batch is taken apart.
                try:
                    result = await self._store.write_rows(cast(list[Row], rows))
                except StoreRejected:
                    result = await self._store_isolating(self._items(batch))
            else:
                result = await self._store_isolating(self._items(batch))
        except StoreUnavailable as error:
            self._stats.store_failures += 1
            logger_metrics.note_store_down()
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write to the request log database; records stay spooled",
                    extra={"error": str(error), "spooled": self._spool.pending_records},
                )
            return False
        except Exception:
            # Not a known database condition: retried with backoff like one, never fatal.
            self._stats.drainer_errors += 1
            log.exception("unexpected error writing request records; retrying")
            return False
        logger_metrics.note_batch_written(time.perf_counter() - started)
        self._stats.stored += result.inserted
        self._stats.duplicates += result.duplicates
        if self._failing:
            self._failing = False
            log.info(
                "request log database reachable again",
                extra={"spooled": self._spool.pending_records},
            )
        return True

    def _items(self, batch: SpoolBatch) -> list[tuple[bytes, Row | logger_pb2.RequestRecord]]:
        """Each spooled payload with what is stored for it: the servicer's row when attached
        (nothing to decode), else the decoded record."""
        rows = self._rows.of(batch)
        items: list[tuple[bytes, Row | logger_pb2.RequestRecord]] = []
        for payload, row in zip(batch.payloads, rows, strict=True):
            if row is not None:
                items.append((payload, row))
                continue
            try:
                items.append((payload, logger_pb2.RequestRecord.FromString(payload)))
            except DecodeError:
                # Only validated records are spooled, so this is disk damage the CRC missed.
                self._stats.rejected["spool:undecodable"] += 1
        return items

    async def _write_items(
        self, items: list[tuple[bytes, Row | logger_pb2.RequestRecord]]
    ) -> WriteResult:
        values = [value for _, value in items]
        if all(isinstance(value, tuple) for value in values):
            return await self._store.write_rows(cast(list[Row], values))
        records = [
            value if isinstance(value, logger_pb2.RequestRecord) else None for value in values
        ]
        if None in records:
            # Mixed (some rows attached, some decoded): decode the rest too.
            records = [
                value
                if isinstance(value, logger_pb2.RequestRecord)
                else logger_pb2.RequestRecord.FromString(payload)
                for payload, value in items
            ]
        return await self._store.write_batch(cast(list[logger_pb2.RequestRecord], records))

    async def _store_isolating(
        self, items: list[tuple[bytes, Row | logger_pb2.RequestRecord]]
    ) -> WriteResult:
        """Stores the items; when the database refuses them as a batch, halves it until the
        refused ones stand alone, dead-letters those and stores the rest."""
        if not items:
            return WriteResult(0, 0)
        try:
            return await self._write_items(items)
        except StoreRejected as error:
            if len(items) == 1:
                self._stats.rejected["store:rejected"] += 1
                self.dead_letters.add(items[0][0], "store:rejected", str(error))
                return WriteResult(0, 0)
            middle = len(items) // 2
            first = await self._store_isolating(items[:middle])
            second = await self._store_isolating(items[middle:])
            return WriteResult(
                first.inserted + second.inserted, first.duplicates + second.duplicates
            )
