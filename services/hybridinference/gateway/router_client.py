"""The gateway's one channel to the router, and one chat request's trip through it."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from hybridinference.common.channels import CHANNEL_OPTIONS, dial
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.errors import HTTP_STATUS, ServiceError, from_rpc_error
from hybridinference.router.v1 import router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from hybridinference.gateway.execution import Execution

log = logging.getLogger(__name__)

# Names one endpoint of the model; the router then uses only it, with no fallback.
PINNED_ENDPOINT_HEADER = "x-hybridinference-endpoint"


def pinned_endpoint_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The pinned endpoint id from the request headers, or "" (the router validates the id)."""
    for key, value in metadata or ():
        if key == PINNED_ENDPOINT_HEADER and isinstance(value, str):
            return value.strip()
    return ""


def from_router_error(error: grpc.aio.AioRpcError, request_id: str) -> ServiceError:
    """The router's failure as the client may see it.

    A 5xx from inside the mesh explains itself with endpoint ids, worker addresses and upstream
    replies ("a: UNAVAILABLE: failed to connect to ... 10.0.3.7:50061"): the operator's
    business, not the caller's. So a 5xx keeps its code, reason and retry hint and says only
    what failed for which model; the full detail goes to the gateway's log under the request
    id. 4xx errors (a bad field, an unknown model) are the caller's to read and pass as-is.
    """
    rich = from_rpc_error(error)
    if HTTP_STATUS.get(rich.code, 500) < 500:
        return rich
    log.warning(
        "router failed the request",
        extra={"request_id": request_id, "code": rich.code.name, "detail": rich.message},
    )
    model = rich.metadata.get("model", "")
    what = _SERVER_ERROR_MESSAGES.get(rich.code, "the request could not be served")
    where = f"model {model!r}, request {request_id}" if model else f"request {request_id}"
    return ServiceError(
        rich.code,
        f"{what} ({where})",
        rich.reason,
        retry_after_s=rich.retry_after_s,
        metadata={"model": model} if model else {},
    )


_SERVER_ERROR_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "no endpoint could serve the request now",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the deadline passed before the request was served",
}


class RouterClient:
    """Calls the router through its gRPC stub, or through a stub of the same shape that serves
    the calls in this process when the router is hosted in the gateway
    (router/hosted_in_gateway.py)."""

    def __init__(self, stub: Any, channel: grpc.aio.Channel | None = None) -> None:
        self._stub = stub
        self._channel = channel

    @classmethod
    def dial(cls, address: str, tls: TlsSettings | None = None) -> RouterClient:
        # TLS / mTLS when the router's settings section serves it.
        channel = dial(address, tls, CHANNEL_OPTIONS)
        return cls(router_pb2_grpc.RouterServiceStub(channel), channel)

    def route(self, request: router_pb2.RouteRequest, timeout_s: float) -> grpc.aio.UnaryStreamCall:
        return self._stub.Route(request, timeout=timeout_s)

    def route_unary(
        self, request: router_pb2.RouteRequest, timeout_s: float
    ) -> grpc.aio.UnaryUnaryCall:
        return self._stub.RouteUnary(
            router_pb2.RouteUnaryRequest(request=request), timeout=timeout_s
        )

    async def list_models(self, timeout_s: float = 5.0) -> list[router_pb2.ModelRoute]:
        try:
            reply = await self._stub.ListModels(router_pb2.ListModelsRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.models)

    async def list_endpoints(self, timeout_s: float = 5.0) -> list[router_pb2.EndpointState]:
        try:
            reply = await self._stub.ListEndpoints(
                router_pb2.ListEndpointsRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.endpoints)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def route_request(execution: Execution) -> router_pb2.RouteRequest:
    """The router's request for an admitted call. The request id travels in it, once."""
    call = execution.call
    request = router_pb2.RouteRequest(
        request_id=execution.request_id,
        model=call.model,
        messages=call.messages,
        sampling=call.sampling,
        pinned_endpoint=execution.pinned_endpoint,
    )
    if call.options.ByteSize():
        request.options.CopyFrom(call.options)
    return request


async def route_unary(
    router: RouterClient, request: router_pb2.RouteRequest, timeout_s: float
) -> router_pb2.RouteUnaryResponse:
    """The whole reply in one unary call, for clients that do not stream: one round trip per
    hop costs less than a server stream. Failures surface as in ``stream_route``."""
    try:
        reply: router_pb2.RouteUnaryResponse = await router.route_unary(request, timeout_s)
    except grpc.aio.AioRpcError as error:
        raise from_router_error(error, request.request_id) from None
    return reply


async def stream_route(
    router: RouterClient, request: router_pb2.RouteRequest, timeout_s: float
) -> AsyncGenerator[router_pb2.RouteResponse, None]:
    """Yields the router's events as they come (the caller notes them on its Execution).

    Router failures surface as ServiceError carrying the router's code, reason and retry hint.
    """
    stream = router.route(request, timeout_s)
    try:
        async for event in stream:
            yield event
    except grpc.aio.AioRpcError as error:
        raise from_router_error(error, request.request_id) from None
    finally:
        # A consumer that stops early (client gone) must not leave the router stream open.
        stream.cancel()
