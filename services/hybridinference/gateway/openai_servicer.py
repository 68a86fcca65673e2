"""OpenAIService: the OpenAI-compatible surface, written as exact bytes behind google.api.HttpBody.

Envoy passes these bodies through untouched. HTTP status: Envoy's transcoder cannot give an
HttpBody reply a custom error body *and* a non-200 status, so an error reply is an OpenAI error
body plus the `x-hybridinference-http-status` response header, which Envoy's front config turns
into the HTTP status (and removes). Errors after the first streamed byte become an SSE error event
with a stable code and no `[DONE]` after it (common.errors.stream_cut_error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2

from hybridinference.common.errors import ServiceError, stream_cut_error
from hybridinference.common.logs import bind_request_id
from hybridinference.gateway import openai_format as fmt
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.openai_request import parse_chat_completion
from hybridinference.gateway.request_ids import HEADER, echo_request_id, request_id_from
from hybridinference.gateway.router_client import (
    pinned_endpoint_from,
    route_request,
    route_unary,
    stream_route,
)
from hybridinference.gateway.runtime import GatewayRuntime
from hybridinference.openai.v1 import openai_pb2, openai_pb2_grpc
from hybridinference.router.v1 import router_pb2

SURFACE = "openai"
HTTP_STATUS_HEADER = "x-hybridinference-http-status"

log = logging.getLogger(__name__)


def _body(data: bytes, content_type: str = fmt.JSON) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


async def _error_reply(
    context: grpc.aio.ServicerContext, request_id: str, error: ServiceError
) -> httpbody_pb2.HttpBody:
    headers = [(HEADER, request_id), (HTTP_STATUS_HEADER, str(error.http_status))]
    if error.retry_after_s is not None:
        # HTTP clients (the openai SDK among them) honour Retry-After on 429 and 503.
        headers.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    await context.send_initial_metadata(tuple(headers))
    return _body(error.openai_body())


class OpenAIServicer(openai_pb2_grpc.OpenAIServiceServicer):
    def __init__(self, runtime: GatewayRuntime) -> None:
        self._runtime = runtime
        self._created = int(time.time())

    async def CreateChatCompletion(
        self, request: openai_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        metadata = context.invocation_metadata()
        request_id = request_id_from(metadata)
        bind_request_id(request_id)
        execution = Execution(request_id, ChatCall.unparsed(stream=False), SURFACE)
        execution.pinned_endpoint = pinned_endpoint_from(metadata)
        runtime = self._runtime
        execution.capture = runtime.capture_content
        streaming = False
        try:
            # The same admission as the typed surface; only the body parser differs.
            await runtime.admit(
                execution,
                metadata,
                lambda: parse_chat_completion(request.body.data, runtime.settings.max_body_bytes),
            )
            routed = route_request(execution)
            if not execution.call.stream:
                yield await self._complete(execution, routed, context)
                return
            events = stream_route(runtime.router, routed, runtime.timeout(context))
            async with contextlib.aclosing(events):
                # Wait for the first event so routing failures still get a real HTTP status.
                first = await anext(events, None)
                await echo_request_id(context, request_id)
                streaming = True
                async for frame in self._frames(first, events, execution):
                    yield _body(frame, fmt.SSE)
        except ServiceError as error:
            execution.fail(error)
            if streaming:
                # No [DONE] after it: the answer is incomplete (see stream_cut_error).
                cut = stream_cut_error(error, execution.streamed_tokens)
                yield _body(fmt.error_frame(cut), fmt.SSE)
            else:
                yield await _error_reply(context, request_id, error)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: cancelled, or the stream closed by its consumer (gRPC
            # closes a server stream's generator). Either way the request is a cancel.
            execution.fail(ServiceError(grpc.StatusCode.CANCELLED, "client cancelled"))
            raise
        except Exception:
            log.exception("unexpected error")
            internal = ServiceError(grpc.StatusCode.INTERNAL, "internal error", "internal")
            execution.fail(internal)
            if streaming:
                cut = stream_cut_error(internal, execution.streamed_tokens)
                yield _body(fmt.error_frame(cut), fmt.SSE)
            else:
                yield await _error_reply(context, request_id, internal)
        finally:
            runtime.record(execution)

    async def _complete(
        self,
        execution: Execution,
        routed: router_pb2.RouteRequest,
        context: grpc.aio.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        reply = await route_unary(self._runtime.router, routed, self._runtime.timeout(context))
        execution.observe_reply(reply)
        selection, completion = execution.selection, execution.completion
        if selection is None or completion is None:
            raise ServiceError(grpc.StatusCode.INTERNAL, "the router ended the stream early")
        await echo_request_id(context, execution.request_id)
        return _body(
            fmt.chat_completion(
                execution.request_id,
                int(execution.started_at),
                selection.served_model,
                reply,
                completion,
            )
        )

    async def _frames(
        self,
        first: router_pb2.RouteResponse | None,
        events: AsyncIterator[router_pb2.RouteResponse],
        execution: Execution,
    ) -> AsyncIterator[bytes]:
        if first is not None:
            execution.observe(first)
        if first is None or execution.selection is None:
            raise ServiceError(grpc.StatusCode.INTERNAL, "the router ended the stream early")
        writer = fmt.ChunkWriter(
            execution.request_id,
            int(execution.started_at),
            execution.selection.served_model,
            execution.call.include_usage,
        )
        event: router_pb2.RouteResponse | None = first
        frame = writer.role()
        while event is not None:
            frame += writer.event(event)
            if event.HasField("completion"):
                frame += writer.finish(event.completion)
            yield frame
            frame = b""
            event = await anext(events, None)
            if event is not None:
                execution.observe(event)
        if execution.completion is None:
            raise ServiceError(grpc.StatusCode.INTERNAL, "the router ended the stream early")

    async def ListModels(
        self, request: openai_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        request_id = request_id_from(context.invocation_metadata())
        try:
            routes = await self._runtime.visible_routes(context.invocation_metadata())
        except ServiceError as error:
            return await _error_reply(context, request_id, error)
        await echo_request_id(context, request_id)
        return _body(fmt.model_list(routes, self._created))

    async def RetrieveModel(
        self, request: openai_pb2.RetrieveModelRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        request_id = request_id_from(context.invocation_metadata())
        try:
            routes = await self._runtime.visible_routes(context.invocation_metadata())
            route = next((r for r in routes if r.name == request.model), None)
            if route is None:
                raise ServiceError(
                    grpc.StatusCode.NOT_FOUND,
                    f"The model '{request.model}' does not exist",
                    "model_not_found",
                )
        except ServiceError as error:
            return await _error_reply(context, request_id, error)
        await echo_request_id(context, request_id)
        return _body(fmt.model_json(route, self._created))
