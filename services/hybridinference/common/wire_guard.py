"""Undecodable request bytes become INVALID_ARGUMENT instead of grpc's UNKNOWN and a traceback.

grpc.aio parses the request before any servicer code runs and answers a protobuf DecodeError
with UNKNOWN (logging it as an unexpected servicer error). The gateway (and every service's
grpc.health.v1) is reachable from the public port, so garbage on the wire is ordinary bad input:
its handlers get a deserializer that turns a parse failure into a marker, and a behaviour that
answers the marker with a clear 400-class status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from hybridinference.common.errors import ServiceError, abort

Handlers = Mapping[str, Any]


class _Malformed:
    """Stands in for a request whose bytes did not parse."""


_MALFORMED = _Malformed()


def _malformed() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a valid protobuf message for this method",
        "malformed_request",
    )


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError):
            return _MALFORMED

    return deserialize


def _guard_unary(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _MALFORMED:
            await abort(context, _malformed())
        return await behaviour(request, context)

    return handle


def _guard_stream(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if request is _MALFORMED:
            await abort(context, _malformed())
        async for reply in behaviour(request, context):
            yield reply

    return handle


def guard_handlers(handlers: Handlers) -> dict[str, Any]:
    """The same unary-request handlers with tolerant parsing (streaming requests untouched)."""
    guarded: dict[str, Any] = {}
    for name, handler in handlers.items():
        if handler.request_streaming or handler.request_deserializer is None:
            guarded[name] = handler
            continue
        deserialize = _tolerant(handler.request_deserializer)
        if handler.response_streaming:
            guarded[name] = handler._replace(
                request_deserializer=deserialize, unary_stream=_guard_stream(handler.unary_stream)
            )
        else:
            guarded[name] = handler._replace(
                request_deserializer=deserialize, unary_unary=_guard_unary(handler.unary_unary)
            )
    return guarded


class GuardedRegistration:
    """Passed to the generated ``add_*Servicer_to_server`` in place of the server.

    It forwards the registration with every handler guarded, so generated code stays untouched.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # The registered method handlers below serve every call; the generic copy is kept for
        # reflection-free lookups, guarded the same way.
        wrapped = []
        for generic in handlers:
            method_handlers = getattr(generic, "_method_handlers", None)
            if method_handlers is None:
                wrapped.append(generic)
                continue
            service = generic.service_name()
            wrapped.append(
                grpc.method_handlers_generic_handler(
                    service,
                    guard_handlers({k.rsplit("/", 1)[-1]: v for k, v in method_handlers.items()}),
                )
            )
        self._server.add_generic_rpc_handlers(tuple(wrapped))

    def add_registered_method_handlers(self, service: str, handlers: Handlers) -> None:
        self._server.add_registered_method_handlers(service, guard_handlers(handlers))
