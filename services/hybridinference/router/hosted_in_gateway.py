"""The router hosted inside the gateway process (``router.colocated: true``).

The gateway's router client then calls the router's own RouterServicer in this process instead of
over gRPC (common/inprocess.py): same relay, strategies, health probes, breakers and hot
reload, same rich errors, deadlines and cancellation, one Python gRPC hop fewer per request.
Routing state (EWMAs, breakers, in-flight counts) is then per gateway process, as in gateways
that route in-process; run the router as its own service when several gateways must share it.

This module is the one seam through which the gateway reaches into the router package.
"""

from __future__ import annotations

from hybridinference.common.inprocess import InProcessStub
from hybridinference.common.settings import MeshSettings
from hybridinference.router.server import RouterCore
from hybridinference.router.servicer import RouterServicer
from hybridinference.router.v1 import router_pb2

ROUTER_SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterService"]


def host_router_in_gateway(
    settings: MeshSettings,
) -> tuple[RouterCore, InProcessStub[RouterServicer]]:
    """The router's parts for the gateway to start and stop with itself, and a stub serving
    RouterService's RPCs in this process (the request id travels in the request, so the
    metadata the gateway adds is not needed)."""
    core = RouterCore.from_settings(settings)
    return core, InProcessStub(RouterServicer(core.relay), ROUTER_SERVICE)
