"""Provider workers hosted inside the router process (``providers[].colocated: true``).

The router talks to every worker through the ProviderStub protocol. For a colocated worker the
stub calls the worker's own ProviderServicer (same adapters, counters and error mapping) in this
process instead of over gRPC (hybridinference/common/inprocess.py), so the relay's retry, fallback,
breaker and health logic cannot tell it from a worker process.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from hybridinference.common.inprocess import StreamCall, UnaryCall, stream_call, unary_call
from hybridinference.common.settings import ProviderWorkerSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.metrics import register_worker_metrics
from hybridinference.providers.server import build_servicer
from hybridinference.providers.servicer import ProviderServicer


class ColocatedStub:
    """A ProviderStub (hybridinference.router.endpoints) backed by a servicer in this process."""

    def __init__(self, servicer: ProviderServicer) -> None:
        self.servicer = servicer

    def Generate(
        self, request: provider_pb2.GenerateRequest, *, timeout: float | None = None
    ) -> StreamCall[provider_pb2.GenerateResponse]:
        return stream_call(self.servicer.Generate, request, timeout)

    def GenerateUnary(
        self, request: provider_pb2.GenerateUnaryRequest, *, timeout: float | None = None
    ) -> UnaryCall[provider_pb2.GenerateUnaryResponse]:
        return unary_call(self.servicer.GenerateUnary, request, timeout)

    def GetStatus(
        self, request: provider_pb2.GetStatusRequest, *, timeout: float | None = None
    ) -> UnaryCall[provider_pb2.GetStatusResponse]:
        return unary_call(self.servicer.GetStatus, request, timeout)


class ColocatedChannel:
    """Stands in for a worker's grpc channel: always READY; closing closes the adapters."""

    def __init__(self, settings: ProviderWorkerSettings, servicer: ProviderServicer) -> None:
        self.settings = settings
        self._servicer = servicer

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def close(self, grace: float | None = None) -> None:
        await self._servicer.close()


Colocate = Callable[[ProviderWorkerSettings], tuple[ColocatedChannel, ColocatedStub]]


def colocate_worker(settings: ProviderWorkerSettings) -> tuple[ColocatedChannel, ColocatedStub]:
    """Builds the worker's adapters in this process; its metrics join the router's /metrics."""
    servicer = build_servicer(settings)
    register_worker_metrics(settings.name, servicer)
    return ColocatedChannel(settings, servicer), ColocatedStub(servicer)
