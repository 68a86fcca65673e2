"""The pinning header: the gateway passes x-hybridinference-endpoint on as RouteRequest's
pinned_endpoint (the router then serves from that endpoint alone, tested in test_router_relay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.router_client import pinned_endpoint_from, route_request, stream_route
from hybridinference.router.v1 import router_pb2


def test_header_is_read_trimmed_and_optional() -> None:
    assert pinned_endpoint_from([("x-hybridinference-endpoint", " sim-b ")]) == "sim-b"
    assert pinned_endpoint_from([("x-request-id", "r"), ("other", "x")]) == ""
    assert pinned_endpoint_from(None) == ""
    # Binary metadata is not an endpoint id.
    assert pinned_endpoint_from([("x-hybridinference-endpoint", b"sim-b")]) == ""


class _Stream:
    def __aiter__(self) -> AsyncIterator[router_pb2.RouteResponse]:
        return self._events()

    async def _events(self) -> AsyncIterator[router_pb2.RouteResponse]:
        yield router_pb2.RouteResponse(delta="x")

    def cancel(self) -> bool:
        return True


class _Router:
    def __init__(self) -> None:
        self.requests: list[router_pb2.RouteRequest] = []

    def route(self, request: router_pb2.RouteRequest, timeout_s: float) -> _Stream:
        self.requests.append(request)
        return _Stream()


async def test_stream_route_sends_the_pinned_endpoint() -> None:
    router = _Router()
    call = ChatCall(
        model="m",
        messages=[chat_pb2.ChatMessage(role="user", content="hi")],
        sampling=chat_pb2.SamplingParams(),
        stream=True,
    )
    execution = Execution("r1", call, "grpc")
    execution.pinned_endpoint = "sim-b"
    router_any: Any = router
    events = [e async for e in stream_route(router_any, route_request(execution), 5.0)]
    assert [e.delta for e in events] == ["x"]
    assert router.requests[0].pinned_endpoint == "sim-b"
