"""Ships request records from the gateway to the logger, off the request path (the gateway's client
of LoggerService; the spool and the batch wire form it uses are common machinery).

``submit`` only appends to a bounded in-memory queue (dropping, and counting, when it is full), so
a slow or absent logger can never slow a request down. One background task drains the queue in
batches over one reused channel.

With a spool directory (the gateway's default), a batch the logger cannot take right now goes to
a local append-only spool on disk instead of being retried in memory, and a replay task resends the
spool, oldest first, with capped backoff; its first success marks the logger reachable again.
While the logger is known to be down, new batches go straight to the spool. What is still queued
at close is spooled too, so it is replayed by the next gateway run. Records are idempotent by
request id at the logger, so a replayed batch that had in fact arrived is harmless.

Without a spool, a failed batch is retried in memory with capped backoff and what is left at
close is counted as abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import cast

import grpc

from hybridinference.common import trace_context
from hybridinference.common.channels import insecure_channel
from hybridinference.common.record_batch import encode_batch
from hybridinference.common.spool import Spool, SpoolError, SpoolFull
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc

log = logging.getLogger(__name__)

# Codes where resending the same batch cannot help (the logger will refuse it again).
_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
_WRITE_METHOD = "/hybridinference.logger.v1.LoggerService/WriteRecords"


class RecordShipper:
    # Per-RPC deadline for one WriteRecords call.
    send_timeout_s: float = 5.0
    # Backoff between retries of a failed batch: doubles from initial up to max.
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0

    def __init__(
        self,
        address: str,
        queue_size: int,
        batch_size: int,
        flush_interval_s: float,
        spool_dir: str | None = None,
        spool_max_bytes: int = 256 << 20,
    ) -> None:
        self._address = address
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._spool: Spool | None = None
        self._queue: asyncio.Queue[logger_pb2.RequestRecord] = asyncio.Queue(maxsize=queue_size)
        self._channel: grpc.aio.Channel | None = None
        self._stub: logger_pb2_grpc.LoggerServiceAsyncStub | None = None
        self._write_raw: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._task: asyncio.Task[None] | None = None
        self._replay_task: asyncio.Task[None] | None = None
        # Records taken off the queue and not yet acknowledged or spooled.
        self._in_flight: list[logger_pb2.RequestRecord] = []
        self._closing = False
        # True while the task waits for the first record of a batch (nothing in flight).
        self._idle = False
        self._failing = False
        # Records dropped because the queue was full (or submitted after close).
        self.dropped = 0
        # Records the logger acknowledged (stored, already present, or rejected as invalid).
        self.sent = 0
        # WriteRecords attempts that failed (each retry of a batch counts once).
        self.failed_batches = 0
        # Records the logger rejected as invalid; they are never retried.
        self.rejected = 0
        # Records given up on: unsent at close without a spool, refused outright, spool full.
        self.abandoned = 0
        # Records written to the disk spool.
        self.spooled = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        self._channel = insecure_channel(self._address)
        # grpc ships no type hints, so mypy cannot pick the aio overload by itself.
        self._stub = cast(
            "logger_pb2_grpc.LoggerServiceAsyncStub",
            logger_pb2_grpc.LoggerServiceStub(self._channel),
        )
        # Replays send spooled bytes as they are, without parsing them back into messages.
        self._write_raw = self._channel.unary_unary(
            _WRITE_METHOD,
            request_serializer=None,
            response_deserializer=logger_pb2.WriteRecordsResponse.FromString,
        )
        if self._spool_dir:
            try:
                self._spool = Spool.open(self._spool_dir, max_bytes=self._spool_max_bytes)
            except SpoolError as error:
                # Logging must never stop the gateway from serving; it degrades to memory only.
                log.error("request record spool unavailable", extra={"error": str(error)})
        if self._spool is not None:
            self._replay_task = asyncio.create_task(self._replay(), name="record-replay")
        self._task = asyncio.create_task(self._run(), name="record-shipper")

    def submit(self, record: logger_pb2.RequestRecord) -> None:
        """Queues the record; never blocks and never raises.

        Called in the request's context, so with tracing on the record takes the request's
        trace context along: the batch that carries it is sent later, from another task.
        """
        if trace_context.enabled() and not record.traceparent:
            record.traceparent = trace_context.current_traceparent()
        if self._closing:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            # Counted, not logged: logging each would flood the logs under overload.
            self.dropped += 1

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def spool_backlog(self) -> int:
        """Records in the disk spool waiting for replay."""
        return self._spool.pending_records if self._spool else 0

    async def close(self, timeout_s: float) -> None:
        """Sends what is queued (for at most ``timeout_s``), spools what is left, stops."""
        self._closing = True
        if self._replay_task is not None:
            # Unacknowledged replays stay in the spool (the cursor did not move).
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        task, self._task = self._task, None
        if task is not None and self._idle:
            # Parked on an empty queue's get(), it would never look at _closing: restart it
            # in closing mode, where it sends what is queued and returns instead of waiting.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            task = asyncio.create_task(self._run(), name="record-shipper-flush")
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftover = self._in_flight + self._drain_queue()
        self._in_flight = []
        if leftover:
            await self._undeliverable(leftover, "shipper closed before delivery")
        if self._spool is not None:
            # An empty spool leaves no directory behind (its name carries the port).
            self._spool.close(remove_if_empty=True)
            self._spool = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        while True:
            if self._closing and self._queue.empty():
                return
            batch = await self._next_batch()
            await self._deliver(batch)
            self._in_flight = []

    async def _next_batch(self) -> list[logger_pb2.RequestRecord]:
        """Up to batch_size records, waiting at most flush_interval_s after the first one."""
        if self._closing:
            first = self._queue.get_nowait()  # _run checked that the queue is not empty
        else:
            self._idle = True
            try:
                first = await self._queue.get()
            finally:
                self._idle = False
        # Filled in place, so close() finds these records even if cancelled mid-way.
        batch = self._in_flight = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_interval_s
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if self._closing or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _deliver(self, batch: list[logger_pb2.RequestRecord]) -> None:
        """Sends one batch; on a transient failure spools it, or without a spool retries."""
        assert self._stub is not None
        if self._failing and self._spool is not None:
            # The replay task probes the logger; until it gets through, go straight to disk.
            await self._to_spool(batch)
            return
        request = logger_pb2.WriteRecordsRequest(records=batch)
        delay = self.backoff_initial_s
        while True:
            try:
                reply = await self._stub.WriteRecords(request, timeout=self.send_timeout_s)
            except grpc.aio.AioRpcError as error:
                self.failed_batches += 1
                self._note_failure(error, len(batch))
                if error.code() in _PERMANENT:
                    self.abandoned += len(batch)
                    log.warning(
                        "logger refused request records",
                        extra={"records": len(batch), "code": error.code().name},
                    )
                    return
                if self._spool is not None:
                    await self._to_spool(batch)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self._note_success(reply, [r.request_id for r in batch])
            self.sent += len(batch)
            return

    async def _to_spool(self, batch: Sequence[logger_pb2.RequestRecord]) -> None:
        assert self._spool is not None
        try:
            await self._spool.append([record.SerializeToString() for record in batch])
        except SpoolFull:
            self.abandoned += len(batch)
            log.error("request record spool full; records lost", extra={"records": len(batch)})
            return
        self.spooled += len(batch)

    async def _replay(self) -> None:
        """Resends the spool, oldest first, until it is empty; then waits for more."""
        assert self._spool is not None and self._write_raw is not None
        spool = self._spool
        delay = self.backoff_initial_s
        while True:
            batch = spool.read(self._batch_size)
            if not batch.payloads:
                await spool.wait_for_data()
                continue
            try:
                reply: logger_pb2.WriteRecordsResponse = await self._write_raw(
                    encode_batch(batch.payloads), timeout=self.send_timeout_s
                )
            except grpc.aio.AioRpcError as error:
                self.failed_batches += 1
                self._note_failure(error, len(batch.payloads))
                if error.code() not in _PERMANENT:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                self.abandoned += len(batch.payloads)
                log.warning(
                    "logger refused spooled records",
                    extra={"records": len(batch.payloads), "code": error.code().name},
                )
            else:
                self._note_success(reply, [])
                self.sent += len(batch.payloads)
            spool.commit(batch)
            delay = self.backoff_initial_s

    def _note_success(self, reply: logger_pb2.WriteRecordsResponse, ids: Sequence[str]) -> None:
        if self._failing:
            self._failing = False
            log.info("request logger reachable again", extra={"address": self._address})
        if reply.rejected:
            self.rejected += len(reply.rejected)
            first = reply.rejected[0]
            log.warning(
                "logger rejected request records",
                extra={
                    "rejected": len(reply.rejected),
                    "first_request_id": ids[first.index] if 0 <= first.index < len(ids) else "",
                    "first_reason": first.reason,
                },
            )

    def _note_failure(self, error: grpc.aio.AioRpcError, size: int) -> None:
        # Log the transition only: a logger outage must not flood the gateway's own logs.
        if not self._failing:
            self._failing = True
            log.warning(
                "cannot ship request records; spooling and retrying with backoff",
                extra={
                    "address": self._address,
                    "code": error.code().name,
                    "error": error.details(),
                    "batch": size,
                },
            )

    def _drain_queue(self) -> list[logger_pb2.RequestRecord]:
        items: list[logger_pb2.RequestRecord] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return items

    async def _undeliverable(
        self, records: Sequence[logger_pb2.RequestRecord], reason: str
    ) -> None:
        """Spools records the shipper could not send; without a spool they are lost (counted)."""
        if self._spool is not None:
            await self._to_spool(records)
            return
        self.abandoned += len(records)
        log.warning("request records lost", extra={"records": len(records), "reason": reason})
