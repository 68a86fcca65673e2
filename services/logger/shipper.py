"""Ships request records from the gateway to the logger, off the request path.

``submit`` only appends to a bounded in-memory queue (dropping, and counting, when it is full), so
a slow or absent logger can never slow a request down. One background task drains the queue in
batches over one reused channel and retries a failed batch with capped exponential backoff; while
it retries, new records keep filling the bounded queue and overflow is dropped.

Seam for the disk spool (a later task): records that cannot be delivered reach ``_undeliverable``
(queue overflow, a batch given up at close, a batch the logger refuses outright). Today it only
counts and logs them; a spool would persist them there and replay them once the logger is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import cast

import grpc

from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from services.common.server import insecure_channel

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


class RecordShipper:
    # Per-RPC deadline for one WriteRecords call.
    send_timeout_s: float = 5.0
    # Backoff between retries of a failed batch: doubles from initial up to max.
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0

    def __init__(
        self, address: str, queue_size: int, batch_size: int, flush_interval_s: float
    ) -> None:
        self._address = address
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._queue: asyncio.Queue[logger_pb2.RequestRecord] = asyncio.Queue(maxsize=queue_size)
        self._channel: grpc.aio.Channel | None = None
        self._stub: logger_pb2_grpc.LoggerServiceAsyncStub | None = None
        self._task: asyncio.Task[None] | None = None
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
        # Records given up on: still unsent when close() timed out, or refused permanently.
        self.abandoned = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        self._channel = insecure_channel(self._address)
        # grpc ships no type hints, so mypy cannot pick the aio overload by itself.
        self._stub = cast(
            "logger_pb2_grpc.LoggerServiceAsyncStub",
            logger_pb2_grpc.LoggerServiceStub(self._channel),
        )
        self._task = asyncio.create_task(self._run(), name="record-shipper")

    def submit(self, record: logger_pb2.RequestRecord) -> None:
        """Queues the record; never blocks and never raises."""
        if self._closing:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._undeliverable([record], "queue full")

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def close(self, timeout_s: float) -> None:
        """Sends what is queued (for at most ``timeout_s``), stops the task, closes the channel."""
        self._closing = True
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
        leftover = self._drain_queue()
        if leftover:
            self._undeliverable(leftover, "shipper closed before delivery")
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        while True:
            if self._closing and self._queue.empty():
                return
            batch = await self._next_batch()
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                # close() timed out mid-delivery: this batch is neither sent nor queued anymore.
                self._undeliverable(batch, "shipper closed before delivery")
                raise

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
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_interval_s
        try:
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
        except asyncio.CancelledError:
            # Records already taken off the queue would otherwise vanish uncounted.
            self._undeliverable(batch, "shipper closed before delivery")
            raise
        return batch

    async def _deliver(self, batch: list[logger_pb2.RequestRecord]) -> None:
        """Sends one batch, retrying until it is acknowledged or refused outright."""
        assert self._stub is not None
        request = logger_pb2.WriteRecordsRequest(records=batch)
        delay = self.backoff_initial_s
        while True:
            try:
                reply = await self._stub.WriteRecords(request, timeout=self.send_timeout_s)
            except grpc.aio.AioRpcError as error:
                self.failed_batches += 1
                self._note_failure(error, len(batch))
                if error.code() in _PERMANENT:
                    self._undeliverable(batch, f"logger refused the batch: {error.code().name}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self._note_success(reply, batch)
            return

    def _note_success(
        self, reply: logger_pb2.WriteRecordsResponse, batch: Sequence[logger_pb2.RequestRecord]
    ) -> None:
        self.sent += len(batch)
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
                    "first_request_id": batch[first.index].request_id
                    if 0 <= first.index < len(batch)
                    else "",
                    "first_reason": first.reason,
                },
            )

    def _note_failure(self, error: grpc.aio.AioRpcError, size: int) -> None:
        # Log the transition only: a logger outage must not flood the gateway's own logs.
        if not self._failing:
            self._failing = True
            log.warning(
                "cannot ship request records; retrying with backoff",
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

    def _undeliverable(self, records: Sequence[logger_pb2.RequestRecord], reason: str) -> None:
        """Where the disk spool will plug in; for now the records are counted and lost."""
        if reason == "queue full":
            # Already counted in `dropped`; logging each would flood the logs under overload.
            return
        self.abandoned += len(records)
        log.warning("request records lost", extra={"records": len(records), "reason": reason})
