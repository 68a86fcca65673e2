"""Ships request records from the gateway to the logger, off the request path (the gateway's client
of LoggerService; the spool and the batch wire form it uses are common machinery).

``submit`` only appends to a bounded in-memory queue, so a slow or absent logger can never slow a
request down; when the queue is full, records spill to the disk spool instead (dropped, and
counted, only when there is no spool or it cannot take them either). One background task drains
the queue in batches (bounded by records and by bytes) over one reused channel.

With a spool directory (the gateway's default), a batch the logger cannot take right now goes to
a local append-only spool on disk instead of being retried in memory, and a replay task resends the
spool, oldest first, with capped backoff; its first success marks the logger reachable again.
While the logger is known to be down, new batches go straight to the spool. What is still queued
at close is spooled too, so it is replayed by the next gateway run. Records are idempotent by
request id at the logger, so a replayed batch that had in fact arrived is harmless.

A payload the logger can never accept is not retried: a record it rejects, or a batch it refuses
outright (split in halves until the records it refuses are isolated), is dead-lettered
(dead_letters.py) and counted. A spool that fails (disk full, I/O error) or cannot take a record
(too large for a frame) never stops the shipper: the batch is retried in memory with backoff (or
the record dead-lettered). Both background tasks are supervised: one that dies of an unexpected
error is restarted, counted in ``restarts``, and its batch in flight delivered (or, if the same
batch kills it twice, dead-lettered).

Without a spool, a failed batch is retried in memory with capped backoff and what is left at
close is counted as abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import grpc

from hybridinference.common import trace_context
from hybridinference.common.channels import CHANNEL_OPTIONS, dial
from hybridinference.common.dead_letters import DeadLetters
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.record_batch import encode_batch
from hybridinference.common.spool import (
    MAX_PAYLOAD_BYTES,
    FrameTooLarge,
    Spool,
    SpoolError,
    SpoolFull,
    SpoolWriteError,
)
from hybridinference.logger.v1 import logger_pb2

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
# Codes where the batch itself is refused (its content or size), so a smaller batch may pass:
# the batch is split to isolate what the logger refuses.
_SPLITTABLE = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})
_MAX_FRAME = MAX_PAYLOAD_BYTES
_WRITE_METHOD = "/hybridinference.logger.v1.LoggerService/WriteRecords"
# Default bound of one batch's serialized size (the logger accepts up to 64 MiB per message).
BATCH_MAX_BYTES = 1 << 20


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
        batch_max_bytes: int = BATCH_MAX_BYTES,
        tls: TlsSettings | None = None,
    ) -> None:
        self._address = address
        self._tls = tls
        self._batch_size = batch_size
        self._batch_max_bytes = batch_max_bytes
        self._flush_interval_s = flush_interval_s
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._spool: Spool | None = None
        self._queue: asyncio.Queue[logger_pb2.RequestRecord] = asyncio.Queue(maxsize=queue_size)
        # Records that found the queue full, waiting to be spilled to the spool (bounded like the
        # queue), and the task spilling them.
        self._overflow: list[logger_pb2.RequestRecord] = []
        # It holds what arrives while one spool append is being synced (a few milliseconds), so
        # a small queue still spills a burst.
        self._overflow_max = max(queue_size, 4096)
        self._spill_task: asyncio.Task[None] | None = None
        self.dead_letters = DeadLetters.beside(spool_dir)
        self._channel: grpc.aio.Channel | None = None
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
        # Records that found the queue full and went to the spool instead.
        self.spilled = 0
        # Spool appends that failed (disk full, I/O error); the records stayed in memory.
        self.spool_errors = 0
        # Background tasks restarted after an unexpected error, by task ("ship", "replay").
        self.restarts: Counter[str] = Counter()
        # The batch in flight when the shipping task last died, to tell a poison batch.
        self._crashed_with: list[logger_pb2.RequestRecord] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        # mTLS when the logger's section serves TLS (then it refuses callers without a cert).
        self._channel = dial(self._address, self._tls, CHANNEL_OPTIONS)
        # grpc ships no type hints, so mypy cannot pick the aio overload by itself.
        # Records are sent as serialized bytes (spooled ones as they were spooled), so a batch
        # can be split, spooled or dead-lettered without encoding its records again.
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
            self._replay_task = asyncio.create_task(
                self._supervise("replay", self._replay), name="record-replay"
            )
        self._task = asyncio.create_task(self._supervise("ship", self._run), name="record-shipper")

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Runs a background task's body until it returns; restarts it when it dies."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts[name] += 1
                log.exception("request record task died; restarting it", extra={"task": name})
                if name == "ship" and self._in_flight:
                    if self._crashed_with is self._in_flight:
                        # The same batch killed it twice: keep it aside, ship the rest.
                        self._dead_letter(self._in_flight, "crash", "the shipper died on it twice")
                        self._in_flight = []
                    self._crashed_with = self._in_flight
                await asyncio.sleep(self.backoff_initial_s)

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
            self._spill(record)

    def _spill(self, record: logger_pb2.RequestRecord) -> None:
        """The queue is full: the record goes to the spool (replayed like any spooled batch)."""
        if self._spool is None or len(self._overflow) >= self._overflow_max:
            # Counted, not logged: logging each would flood the logs under overload.
            self.dropped += 1
            return
        self._overflow.append(record)
        if self._spill_task is None or self._spill_task.done():
            self._spill_task = asyncio.create_task(self._spill_overflow(), name="record-spill")

    async def _spill_overflow(self) -> None:
        while self._overflow:
            batch, self._overflow = self._overflow, []
            if await self._to_spool(batch):
                self.spilled += len(batch)
            else:
                self.dropped += len(batch)

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
        if self._spill_task is not None:
            with contextlib.suppress(Exception):
                await self._spill_task
            self._spill_task = None
        leftover = self._in_flight + self._drain_queue() + self._overflow
        self._in_flight = []
        self._overflow = []
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
        if self._in_flight:
            # Restarted after a crash: the batch it held goes first.
            await self._deliver(self._in_flight)
            self._in_flight = []
        while True:
            if self._closing and self._queue.empty():
                return
            batch = await self._next_batch()
            await self._deliver(batch)
            self._in_flight = []
            self._crashed_with = None

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
        size = first.ByteSize()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_interval_s
        while len(batch) < self._batch_size and size < self._batch_max_bytes:
            try:
                record = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
            else:
                batch.append(record)
                size += record.ByteSize()
                continue
            remaining = deadline - loop.time()
            if self._closing or remaining <= 0:
                break
            try:
                record = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            batch.append(record)
            size += record.ByteSize()
        return batch

    async def _deliver(self, batch: list[logger_pb2.RequestRecord]) -> None:
        """Sends one batch; on a transient failure spools it, or retries it in memory (without a
        spool, or while the spool cannot take it)."""
        payloads = [record.SerializeToString() for record in batch]
        delay = self.backoff_initial_s
        spool_failed = False
        while True:
            # While the logger is known to be down the replay task probes it; go to disk.
            may_send = self._spool is None or not self._failing or spool_failed
            if may_send and await self._send(payloads):
                return
            if self._spool is not None:
                spool_failed = not await self._to_spool(batch, payloads)
                if not spool_failed:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    async def _send(self, payloads: list[bytes]) -> bool:
        """One WriteRecords of serialized records: True when done with them (acknowledged, or
        dead-lettered as never acceptable), False on a transient failure."""
        assert self._write_raw is not None
        try:
            reply: logger_pb2.WriteRecordsResponse = await self._write_raw(
                encode_batch(payloads), timeout=self.send_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            self.failed_batches += 1
            code = error.code()
            if code in _SPLITTABLE and len(payloads) > 1:
                # Isolate what is refused: each half goes on its own (a half sent before the
                # other fails is sent again with the batch; the logger skips the replay).
                middle = len(payloads) // 2
                return await self._send(payloads[:middle]) and await self._send(payloads[middle:])
            if code in _SPLITTABLE or code in _PERMANENT:
                log.warning(
                    "logger refused request records",
                    extra={"records": len(payloads), "code": code.name},
                )
                for payload in payloads:
                    self.dead_letters.add(
                        payload, f"refused:{code.name}", f"{code.name}: {error.details()}"
                    )
                self.abandoned += len(payloads)
                return True
            self._note_failure(error, len(payloads))
            return False
        self._note_success(reply, payloads)
        self.sent += len(payloads)
        return True

    async def _to_spool(
        self,
        batch: Sequence[logger_pb2.RequestRecord],
        payloads: list[bytes] | None = None,
    ) -> bool:
        """Appends to the spool; False when it cannot take them now (full, disk error): the
        caller keeps them. A record too large for a frame is dead-lettered, the rest spooled."""
        assert self._spool is not None
        if payloads is None:
            payloads = [record.SerializeToString() for record in batch]
        try:
            await self._spool.append(payloads)
        except FrameTooLarge:
            fitting = []
            for payload in payloads:
                if len(payload) > _MAX_FRAME:
                    self.dead_letters.add(payload, "too_large", "larger than a spool frame")
                else:
                    fitting.append(payload)
            if fitting:
                return await self._to_spool([], fitting)
            return True
        except SpoolFull:
            self.spool_errors += 1
            log.error("request record spool full", extra={"records": len(payloads)})
            return False
        except SpoolWriteError as error:
            self.spool_errors += 1
            log.error("request record spool write failed", extra={"error": str(error)})
            return False
        self.spooled += len(payloads)
        return True

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
            if not await self._send(batch.payloads):
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            spool.commit(batch)
            delay = self.backoff_initial_s

    def _dead_letter(
        self, records: Sequence[logger_pb2.RequestRecord], label: str, reason: str
    ) -> None:
        for record in records:
            self.dead_letters.add(record.SerializeToString(), label, reason)
        self.abandoned += len(records)

    def _note_success(
        self, reply: logger_pb2.WriteRecordsResponse, payloads: Sequence[bytes]
    ) -> None:
        if self._failing:
            self._failing = False
            log.info("request logger reachable again", extra={"address": self._address})
        if reply.rejected:
            # Validated records the logger will never take: kept aside with its reason.
            self.rejected += len(reply.rejected)
            for rejection in reply.rejected:
                if 0 <= rejection.index < len(payloads):
                    self.dead_letters.add(payloads[rejection.index], "rejected", rejection.reason)

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
        if self._spool is not None and await self._to_spool(records):
            return
        self.abandoned += len(records)
        log.warning("request records lost", extra={"records": len(records), "reason": reason})
