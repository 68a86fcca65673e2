"""The router hosted inside the gateway process (``router.colocated: true``).

The gateway's router client then calls the router's own RouterServicer in this process instead of
over gRPC (common/inprocess.py): same relay, strategies, health probes, breakers and hot
reload, same rich errors, deadlines and cancellation, one Python gRPC hop fewer per request.
Routing state (EWMAs, breakers, in-flight counts) is then per gateway process, as in gateways
that route in-process; run the router as its own service when several gateways must share it.
"""

from __future__ import annotations

from hybridinference.common.inprocess import StreamCall, UnaryCall, stream_call, unary_call
from hybridinference.common.settings import MeshSettings
from hybridinference.router.server import RouterCore
from hybridinference.router.servicer import RouterServicer
from hybridinference.router.v1 import router_pb2


class ColocatedRouterStub:
    """The RouterServiceStub calls the gateway makes, served by a RouterServicer in this
    process. ``metadata`` is accepted and dropped: the request id travels in the request."""

    def __init__(self, servicer: RouterServicer) -> None:
        self.servicer = servicer

    def Route(
        self,
        request: router_pb2.RouteRequest,
        *,
        timeout: float | None = None,
        metadata: object = None,
    ) -> StreamCall[router_pb2.RouteResponse]:
        return stream_call(self.servicer.Route, request, timeout)

    def RouteUnary(
        self,
        request: router_pb2.RouteUnaryRequest,
        *,
        timeout: float | None = None,
        metadata: object = None,
    ) -> UnaryCall[router_pb2.RouteUnaryResponse]:
        return unary_call(self.servicer.RouteUnary, request, timeout)

    def ListModels(
        self, request: router_pb2.ListModelsRequest, *, timeout: float | None = None
    ) -> UnaryCall[router_pb2.ListModelsResponse]:
        return unary_call(self.servicer.ListModels, request, timeout)

    def ListEndpoints(
        self, request: router_pb2.ListEndpointsRequest, *, timeout: float | None = None
    ) -> UnaryCall[router_pb2.ListEndpointsResponse]:
        return unary_call(self.servicer.ListEndpoints, request, timeout)


def host_router(settings: MeshSettings) -> tuple[RouterCore, ColocatedRouterStub]:
    """The router's parts for the gateway to start and stop with itself, and its stub."""
    core = RouterCore.from_settings(settings)
    return core, ColocatedRouterStub(RouterServicer(core.relay))
