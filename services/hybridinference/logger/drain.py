"""Moves acknowledged records from the spool into the database, in batches, at least once.

A batch leaves the spool only after the store committed it and every batch before it; a failed
write is retried with capped backoff, for as long as the database is away, while the servicer
keeps acknowledging new records into the spool. A crash between commit and cursor update replays
the batch: the store's idempotent insert makes that harmless.

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

from hybridinference.common.spool import Spool, SpoolBatch
from hybridinference.logger import metrics as logger_metrics
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.rows import Row
from hybridinference.logger.stats import LoggerStats
from hybridinference.logger.store import RecordStore, StoreUnavailable
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

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spool-drainer")

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
        """Stores the batch; False when the database is unavailable (stays spooled)."""
        started = time.perf_counter()
        try:
            rows = self._rows.of(batch)
            if None not in rows:
                # The servicer's rows of these records (AttachedRows): nothing to decode.
                result = await self._store.write_rows(cast(list[Row], rows))
            else:
                result = await self._store.write_batch(self._decode(batch))
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

    def _decode(self, batch: SpoolBatch) -> list[logger_pb2.RequestRecord]:
        records: list[logger_pb2.RequestRecord] = []
        for payload in batch.payloads:
            try:
                records.append(logger_pb2.RequestRecord.FromString(payload))
            except DecodeError:
                # Only validated records are spooled, so this is disk damage the CRC missed.
                self._stats.rejected["spool:undecodable"] += 1
        return records
