"""GatewayService: the typed public API (native gRPC, and HTTP/JSON through Envoy)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError, abort, stream_cut_error
from hybridinference.common.logs import bind_request_id
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.naming import TYPED
from hybridinference.gateway.request_ids import HEADER, echo_request_id, request_id_from
from hybridinference.gateway.router_client import (
    pinned_endpoint_from,
    route_request,
    route_unary,
    stream_route,
)
from hybridinference.gateway.runtime import GatewayRuntime
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.router.v1 import router_pb2

SURFACE = "grpc"
# Set by Envoy's edge policy on requests that came as HTTP/JSON under /api/ (deploy/envoy).
DIALECT_HEADER = "x-hybridinference-dialect"


def _http_client(context: grpc.aio.ServicerContext) -> bool:
    """The call is an HTTP client's, transcoded by Envoy (not a native gRPC one)."""
    return any(
        key == DIALECT_HEADER and value == "api"
        for key, value in context.invocation_metadata() or ()
    )


def _to_call(
    request: gateway_pb2.ChatRequest | gateway_pb2.ChatStreamRequest, stream: bool
) -> ChatCall:
    options = request.options
    problems = []
    if options.user and request.user and options.user != request.user:
        problems.append(FieldViolation("options.user", "must be empty or equal to user"))
    call = ChatCall(
        model=request.model,
        messages=list(request.messages),
        sampling=request.sampling,
        stream=stream,
        user=request.user or options.user,
        metadata=dict(request.metadata),
        options=options,
        problems=problems,
        naming=TYPED,
    )
    # The end-user id reaches upstreams that use it, as on the OpenAI surface.
    call.options.user = call.user
    return call


def _copy_rich(event: router_pb2.RouteResponse, reply: gateway_pb2.ChatStreamResponse) -> None:
    """The event's per-choice fields beyond text; text events (nearly all) skip each copy."""
    if event.index:
        reply.index = event.index
    if event.reasoning:
        reply.reasoning = event.reasoning
    if event.refusal:
        reply.refusal = event.refusal
    if event.finish_reason:
        reply.finish_reason = event.finish_reason
    if event.tool_calls:
        reply.tool_calls.extend(event.tool_calls)
    if event.HasField("logprobs"):
        reply.logprobs.CopyFrom(event.logprobs)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, runtime: GatewayRuntime) -> None:
        self._runtime = runtime

    def _begin(self, stream: bool, context: grpc.aio.ServicerContext) -> Execution:
        request_id = request_id_from(context.invocation_metadata())
        bind_request_id(request_id)
        # Trailing metadata reaches the client on success and on error alike.
        context.set_trailing_metadata(((HEADER, request_id),))
        execution = Execution(request_id, ChatCall.unparsed(stream), SURFACE)
        execution.pinned_endpoint = pinned_endpoint_from(context.invocation_metadata())
        execution.capture = self._runtime.capture_content
        return execution

    async def Chat(
        self, request: gateway_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ChatResponse:
        execution = self._begin(False, context)
        reply = gateway_pb2.ChatResponse(id=execution.request_id, created=int(execution.started_at))
        async with self._runtime.guarded(execution, context):
            await self._runtime.admit(
                execution, context.invocation_metadata(), lambda: _to_call(request, False)
            )
            routed = await route_unary(
                self._runtime.router, route_request(execution), self._runtime.timeout(context)
            )
            execution.observe_reply(routed)
            # As a header too: HTTP/JSON clients through Envoy do not see unary trailers.
            await echo_request_id(context, execution.request_id)
            reply.content = routed.content
            reply.choices.extend(routed.choices)
            if execution.selection is not None:
                reply.model = execution.selection.served_model
                reply.endpoint = execution.selection.endpoint
            if execution.completion is not None:
                reply.finish_reason = execution.completion.finish_reason
                reply.usage.CopyFrom(execution.completion.usage)
        return reply

    async def ChatStream(
        self, request: gateway_pb2.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ChatStreamResponse]:
        execution = self._begin(True, context)
        async with self._runtime.guarded(execution, context):
            await self._runtime.admit(
                execution, context.invocation_metadata(), lambda: _to_call(request, True)
            )
            model = endpoint = ""
            first = True
            # Choice 0's finish goes out once: on its own event, else on the final one.
            finished = False
            try:
                async with contextlib.aclosing(
                    stream_route(
                        self._runtime.router,
                        route_request(execution),
                        self._runtime.timeout(context),
                    )
                ) as events:
                    async for event in events:
                        execution.observe(event)
                        if first:
                            # Sent once routing succeeded, so a failure before it is a
                            # trailers-only response that Envoy maps to an HTTP error status.
                            await echo_request_id(context, execution.request_id)
                            first = False
                        if event.HasField("selection"):
                            model = event.selection.served_model
                            endpoint = event.selection.endpoint
                        reply = gateway_pb2.ChatStreamResponse(
                            id=execution.request_id,
                            model=model,
                            delta=event.delta,
                            endpoint=endpoint,
                        )
                        _copy_rich(event, reply)
                        if event.finish_reason and event.index == 0:
                            finished = True
                        if event.HasField("completion"):
                            if not finished:
                                reply.finish_reason = event.completion.finish_reason
                            reply.usage.CopyFrom(event.completion.usage)
                        yield reply
            except ServiceError as error:
                # An HTTP client of the SSE stream never reads the trailers a gRPC status would
                # travel in (its 200 is long sent): it gets the error as the last event.
                if first or not _http_client(context):
                    raise
                execution.fail(error)
                cut = stream_cut_error(error, execution.streamed_tokens)
                yield gateway_pb2.ChatStreamResponse(
                    id=execution.request_id,
                    model=model,
                    endpoint=endpoint,
                    error=cut.to_status_proto(),
                )

    async def ListModels(
        self, request: gateway_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListModelsResponse:
        try:
            routes = await self._runtime.visible_routes(context.invocation_metadata())
        except ServiceError as error:
            await abort(context, error)
        return gateway_pb2.ListModelsResponse(
            models=[
                gateway_pb2.Model(
                    id=route.name,
                    owned_by=route.owned_by,
                    providers=list(route.providers),
                    capabilities=route.capabilities,
                )
                for route in routes
            ]
        )
