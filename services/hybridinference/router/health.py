"""Endpoint health: active GetStatus probes per worker plus passive outcomes of real requests.

Probes set the truth every interval. Between probes, a request that could not reach a worker marks
all of that worker's endpoints unhealthy, so the next requests skip it without waiting for a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.endpoints import Endpoint, EndpointTable, Worker

log = logging.getLogger(__name__)

# Substrings of gRPC core's own messages when there is no usable connection (refused, reset,
# closed); a provider's deliberate UNAVAILABLE never uses them.
_CONNECTION_HINTS = ("failed to connect", "connection refused", "socket closed", "connection reset")


def is_connection_failure(error: grpc.aio.AioRpcError, worker: Worker) -> bool:
    """True when an UNAVAILABLE came from the transport rather than from the provider."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    return any(hint in details for hint in _CONNECTION_HINTS) or not worker.connected()


class HealthMonitor:
    def __init__(self, table: EndpointTable, interval_s: float, timeout_s: float) -> None:
        self._table = table
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def replace_table(self, table: EndpointTable) -> None:
        """Probes the endpoints of a reloaded configuration from the next round on."""
        self._table = table

    # Active probes.

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # a bug in one round must not end probing for good
                log.exception("health probe round failed")
            await asyncio.sleep(self._interval_s)

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(w) for w in self._table.workers.values()))

    async def probe(self, worker: Worker) -> None:
        try:
            reply = await worker.stub.GetStatus(
                provider_pb2.GetStatusRequest(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            detail = f"probe failed: {error.code().name}: {error.details()}"
            self._mark_worker(worker, False, detail)
            return
        statuses = {s.endpoint: s for s in reply.endpoints}
        for endpoint in worker.endpoints:
            status = statuses.get(endpoint.id)
            if status is not None:
                # The provider's own view of its load, for the load-aware policies.
                endpoint.stats.record_probe(
                    status.waiting, status.running, status.kv_cache_usage, endpoint.in_flight
                )
            if status is None:
                self._mark(endpoint, False, f"worker {worker.name} does not host {endpoint.id}")
            elif status.healthy:
                self._mark(endpoint, True, "")
            else:
                self._mark(endpoint, False, status.detail or "provider reports unhealthy")

    # Passive outcomes.

    def record_failure(self, endpoint: Endpoint, error: grpc.aio.AioRpcError) -> bool:
        """Marks the worker down when the error shows it cannot be reached; True if so."""
        if not is_connection_failure(error, endpoint.worker):
            return False
        self._mark_worker(
            endpoint.worker, False, f"connection failed: {error.details() or 'UNAVAILABLE'}"
        )
        return True

    def _mark_worker(self, worker: Worker, healthy: bool, detail: str) -> None:
        for endpoint in worker.endpoints:
            self._mark(endpoint, healthy, detail)

    def _mark(self, endpoint: Endpoint, healthy: bool, detail: str) -> None:
        if endpoint.healthy != healthy:
            log.warning(
                "endpoint health changed",
                extra={"endpoint": endpoint.id, "healthy": healthy, "detail": detail},
            )
        endpoint.healthy = healthy
        endpoint.health_detail = detail


def filter_healthy(candidates: tuple[Endpoint, ...] | list[Endpoint]) -> list[Endpoint]:
    """The healthy candidates; all of them when none is healthy, since probes may lag."""
    healthy = [e for e in candidates if e.healthy]
    return healthy or list(candidates)
