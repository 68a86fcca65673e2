"""RouterService over gRPC: a thin shell that maps the relay's errors to rich statuses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from hybridinference.common.chat_features import capabilities_proto
from hybridinference.common.errors import ServiceError, abort
from hybridinference.common.logs import bind_request_id
from hybridinference.router.admin import endpoint_state
from hybridinference.router.relay import Relay
from hybridinference.router.v1 import router_pb2, router_pb2_grpc


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, relay: Relay) -> None:
        # The table is read through the relay on every call: a config reload replaces it.
        self._relay = relay

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.RouteResponse]:
        bind_request_id(request.request_id)
        try:
            # aclosing: if the caller goes away while we wait to send, the relay's generator is
            # closed at once, which cancels the provider call instead of leaving it to the GC.
            async with contextlib.aclosing(
                self._relay.route(request, context.time_remaining)
            ) as stream:
                async for response in stream:
                    yield response
        except ServiceError as error:
            await abort(context, error)

    async def RouteUnary(
        self, request: router_pb2.RouteUnaryRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteUnaryResponse:
        route = request.request
        bind_request_id(route.request_id)
        try:
            return await self._relay.route_unary(route, context.time_remaining)
        except ServiceError as error:
            await abort(context, error)

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListModelsResponse:
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.ModelRoute(
                    name=m.name,
                    strategy=m.strategy,
                    endpoints=[e.id for e in m.endpoints],
                    providers=m.providers,
                    owned_by=m.owned_by,
                    # 0 for an undeclared output limit: the gateway fills in its own cap.
                    capabilities=capabilities_proto(m.options.capabilities, 0),
                )
                for m in self._relay.table.models.values()
            ]
        )

    async def ListEndpoints(
        self, request: router_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListEndpointsResponse:
        return router_pb2.ListEndpointsResponse(
            endpoints=[endpoint_state(e) for e in self._relay.table.endpoints.values()]
        )
