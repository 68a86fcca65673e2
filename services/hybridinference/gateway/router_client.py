"""The gateway's one channel to the router, and one chat request's trip through it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from hybridinference.common.channels import CHANNEL_OPTIONS, dial
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.errors import ServiceError, from_rpc_error
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.request_ids import record_key
from hybridinference.router.v1 import router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from hybridinference.gateway.quota.guard import Ticket
    from hybridinference.keys.model import ApiKey

REQUEST_ID_HEADER = "x-request-id"
# Names one endpoint of the model; the router then uses only it, with no fallback.
PINNED_ENDPOINT_HEADER = "x-hybridinference-endpoint"


def pinned_endpoint_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The pinned endpoint id from the request headers, or "" (the router validates the id)."""
    for key, value in metadata or ():
        if key == PINNED_ENDPOINT_HEADER and isinstance(value, str):
            return value.strip()
    return ""


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
        return self._stub.Route(
            request, timeout=timeout_s, metadata=((REQUEST_ID_HEADER, request.request_id),)
        )

    def route_unary(
        self, request: router_pb2.RouteRequest, timeout_s: float
    ) -> grpc.aio.UnaryUnaryCall:
        return self._stub.RouteUnary(
            router_pb2.RouteUnaryRequest(request=request),
            timeout=timeout_s,
            metadata=((REQUEST_ID_HEADER, request.request_id),),
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


@dataclass
class Execution:
    """What happened to one request, filled in as its stream goes by (for the request record)."""

    # The caller's x-request-id (or the one made for it and returned): what the client, the
    # router, the providers and the logs see. Not unique: two requests may send the same one.
    request_id: str
    call: ChatCall
    surface: str
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    selection: router_pb2.Selection | None = None
    completion: router_pb2.Completion | None = None
    first_token_monotonic: float | None = None
    status: grpc.StatusCode = grpc.StatusCode.OK
    error: str = ""
    # The caller's key (auth on), and its admitted quota slot until settled.
    api_key: ApiKey | None = None
    quota_ticket: Ticket | None = None
    # From the x-hybridinference-endpoint header; "" lets the router choose.
    pinned_endpoint: str = ""
    # logger.capture_content: the reply's text is collected for the record (prompt and
    # response are stored then; otherwise nothing is collected).
    capture: bool = False
    response_parts: list[str] = field(default_factory=list)
    # Content deltas passed on to the client (one per generated token from our providers); with
    # a failure after the first, the record says the stream was cut and after how many.
    streamed_tokens: int = 0
    # The record's key: unique per request, whatever the caller sent (request_ids.record_key).
    record_id: str = field(default_factory=record_key)

    @property
    def stream_cut(self) -> bool:
        """The request failed after part of its answer had been sent."""
        return self.status != grpc.StatusCode.OK and self.streamed_tokens > 0

    def fail(self, error: ServiceError) -> None:
        self.status = error.code
        self.error = error.message

    @property
    def ttft_ms(self) -> float:
        if self.first_token_monotonic is None:
            return 0.0
        return (self.first_token_monotonic - self.started_monotonic) * 1000.0


def _route_request(execution: Execution) -> router_pb2.RouteRequest:
    call = execution.call
    return router_pb2.RouteRequest(
        request_id=execution.request_id,
        model=call.model,
        messages=call.messages,
        sampling=call.sampling,
        pinned_endpoint=execution.pinned_endpoint,
    )


async def route_unary(
    router: RouterClient, execution: Execution, timeout_s: float
) -> router_pb2.RouteUnaryResponse:
    """The whole reply in one unary call, for clients that do not stream: one round trip per
    hop costs less than a server stream. Records selection and completion; the reply's
    arrival is its first token. Failures surface as in ``stream_route``."""
    try:
        reply: router_pb2.RouteUnaryResponse = await router.route_unary(
            _route_request(execution), timeout_s
        )
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None
    if reply.HasField("selection"):
        execution.selection = reply.selection
    if reply.content:
        execution.first_token_monotonic = time.monotonic()
        if execution.capture:
            execution.response_parts.append(reply.content)
    if reply.HasField("completion"):
        execution.completion = reply.completion
    return reply


async def stream_route(
    router: RouterClient, execution: Execution, timeout_s: float
) -> AsyncGenerator[router_pb2.RouteResponse, None]:
    """Yields the router's events, recording selection, first token and completion.

    Router failures surface as ServiceError carrying the router's code, reason and retry hint.
    """
    stream = router.route(_route_request(execution), timeout_s)
    try:
        async for event in stream:
            if event.HasField("selection"):
                execution.selection = event.selection
            if event.delta:
                execution.streamed_tokens += 1
                if execution.first_token_monotonic is None:
                    execution.first_token_monotonic = time.monotonic()
                if execution.capture:
                    execution.response_parts.append(event.delta)
            if event.HasField("completion"):
                execution.completion = event.completion
            yield event
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None
    finally:
        # A consumer that stops early (client gone) must not leave the router stream open.
        stream.cancel()
