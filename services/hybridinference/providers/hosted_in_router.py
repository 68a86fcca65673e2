"""Provider workers hosted inside the router process (``providers[].colocated: true``).

The router talks to every worker through the ProviderStub protocol. For a hosted worker the stub
calls the worker's own ProviderServicer (same adapters, counters and error mapping) in this
process instead of over gRPC (hybridinference/common/inprocess.py), so the relay's retry,
fallback, breaker and health logic cannot tell it from a worker process.

This module is the one seam through which the router reaches into the providers package.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from hybridinference.common.inprocess import InProcessStub
from hybridinference.common.settings import ProviderWorkerSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.metrics import register_worker_metrics
from hybridinference.providers.server import build_servicer
from hybridinference.providers.servicer import ProviderServicer

PROVIDER_SERVICE = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"]


class WorkerInRouterChannel:
    """Stands in for a worker's grpc channel: always READY; closing closes the adapters."""

    def __init__(self, settings: ProviderWorkerSettings, servicer: ProviderServicer) -> None:
        self.settings = settings
        self._servicer = servicer

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def close(self, grace: float | None = None) -> None:
        await self._servicer.close()


WorkerStub = InProcessStub[ProviderServicer]
HostWorker = Callable[[ProviderWorkerSettings], tuple[WorkerInRouterChannel, WorkerStub]]


def host_worker_in_router(
    settings: ProviderWorkerSettings,
) -> tuple[WorkerInRouterChannel, WorkerStub]:
    """Builds the worker's adapters in this process; its metrics join the router's /metrics.
    The stub serves ProviderService's RPCs (a ProviderStub for the router's endpoint table)."""
    servicer = build_servicer(settings)
    register_worker_metrics(settings.name, servicer)
    return WorkerInRouterChannel(settings, servicer), InProcessStub(servicer, PROVIDER_SERVICE)
