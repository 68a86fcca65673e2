"""A provider worker hosted in the router: its servicer, called in-process through a stub made from
the service descriptor, behaves like the gRPC stub — same events, same rich errors as
AioRpcError, deadlines, and cancellation reaching the adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.inprocess import InProcessStub
from hybridinference.common.settings import MeshSettings, ProviderWorkerSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.hosted_in_router import (
    WorkerInRouterChannel,
    WorkerStub,
    host_worker_in_router,
)
from hybridinference.router.endpoints import EndpointTable
from support.polling import until

FAST = {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 5}
SLOW = {"ttft_ms": 1, "itl_ms": 50, "output_tokens": 40}


def worker_settings(**sim: Any) -> ProviderWorkerSettings:
    return ProviderWorkerSettings(
        name="local",
        kind="sim",
        port=0,
        colocated=True,
        endpoints=[
            {"id": "fast", "model": "fast-model", "sim": FAST},
            {"id": "slow", "model": "slow-model", "sim": SLOW},
            {"id": "broken", "model": "fast-model", "sim": {**FAST, "fail_rate": 1.0, **sim}},
        ],
    )


def generate(endpoint: str) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="r1",
        endpoint=endpoint,
        messages=[chat_pb2.ChatMessage(role="user", content="hello colocated")],
    )


@pytest.fixture
async def colocated() -> Any:
    channel, stub = host_worker_in_router(worker_settings())
    try:
        yield channel, stub
    finally:
        await channel.close()


async def test_stream_and_unary_give_the_same_text(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    _, stub = colocated
    events = [event async for event in stub.Generate(generate("fast"), timeout=5)]
    assert events[-1].usage.completion_tokens == 5
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_STOP
    unary = await stub.GenerateUnary(provider_pb2.GenerateUnaryRequest(request=generate("fast")))
    assert unary.response.delta == "".join(e.delta for e in events)
    assert unary.response.usage == events[-1].usage
    assert stub.servicer.counters["fast"].completed_total == 2


async def test_errors_surface_as_the_rich_status_a_remote_worker_sends(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    _, stub = colocated
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GenerateUnary(provider_pb2.GenerateUnaryRequest(request=generate("nope")))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(unknown.value).reason == "endpoint_not_found"

    with pytest.raises(grpc.aio.AioRpcError) as broken:
        async for _ in stub.Generate(generate("broken")):
            pass
    assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stub.servicer.counters["broken"].failed_total == 1


async def test_deadline_ends_a_stream_and_a_unary_call_with_deadline_exceeded(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    _, stub = colocated
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in stub.Generate(generate("slow"), timeout=0.2):
            pass
    assert streamed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as whole:
        await stub.GenerateUnary(
            provider_pb2.GenerateUnaryRequest(request=generate("slow")), timeout=0.2
        )
    assert whole.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    counters = stub.servicer.counters["slow"]
    assert (counters.running, counters.cancelled_total) == (0, 2)


async def test_cancel_of_a_stream_left_at_an_event_stops_the_generation(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    """The relay stops reading a stream (a hedge that lost) and cancels the call: the adapter
    must stop then, not when the generator is garbage-collected."""
    _, stub = colocated
    call = stub.Generate(generate("slow"), timeout=30)
    events = aiter(call)
    await anext(events)
    counters = stub.servicer.counters["slow"]
    assert counters.running == 1
    assert call.cancel()
    await until(lambda: counters.running == 0, 5, "the generation to stop")
    assert (counters.running, counters.cancelled_total) == (0, 1)
    assert not call.cancel()  # already finished


async def test_cancelling_a_unary_call_cancels_the_generation(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    _, stub = colocated
    call = stub.GenerateUnary(provider_pb2.GenerateUnaryRequest(request=generate("slow")))
    counters = stub.servicer.counters["slow"]
    await until(lambda: counters.running == 1, 5, "the generation to start")
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (counters.running, counters.cancelled_total) == (0, 1)


async def test_status_reports_every_endpoint(
    colocated: tuple[WorkerInRouterChannel, WorkerStub],
) -> None:
    channel, stub = colocated
    reply = await stub.GetStatus(provider_pb2.GetStatusRequest(), timeout=1)
    assert [e.endpoint for e in reply.endpoints] == ["fast", "slow", "broken"]
    assert channel.get_state() == grpc.ChannelConnectivity.READY


def mesh(**sim: Any) -> MeshSettings:
    return MeshSettings.model_validate(
        {
            "providers": [worker_settings(**sim).model_dump()],
            "models": [{"name": "m", "endpoints": ["fast", "slow"]}],
        }
    )


async def test_table_hosts_a_colocated_worker_and_keeps_it_until_its_settings_change() -> None:
    def no_dial(address: str) -> Any:
        raise AssertionError(f"a colocated worker must not be dialled ({address})")

    table = EndpointTable.from_settings(mesh(), connect=no_dial)
    worker = table.workers["local"]
    assert isinstance(worker.stub, InProcessStub)
    assert worker.address == "colocated:local"
    assert worker.connected()
    same = EndpointTable.from_settings(mesh(), connect=no_dial, previous=table)
    assert same.workers["local"].stub is worker.stub
    assert same.channels_dropped_since(table) == []
    changed = EndpointTable.from_settings(mesh(ttft_ms=7), connect=no_dial, previous=same)
    assert changed.workers["local"].stub is not worker.stub
    assert changed.channels_dropped_since(same) == [same.workers["local"]]
    await same.close()
    await changed.close()


def test_the_in_process_stub_has_one_method_per_rpc_of_the_descriptor() -> None:
    service = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"]

    class Partial:
        async def GetStatus(self, request: object, context: object) -> None:
            return None

    with pytest.raises(TypeError, match=r"does not implement .*ProviderService\.Generate"):
        InProcessStub(Partial(), service)
    stub = InProcessStub(ProviderServicerLike(), service)
    assert sorted(m.name for m in service.methods) == sorted(
        name for name in vars(stub) if name[0].isupper()
    )
    with pytest.raises(AttributeError, match="has no RPC 'Route'"):
        stub.Route()


class ProviderServicerLike:
    """Every ProviderService RPC, from the descriptor (nothing is ever called)."""

    def __getattr__(self, name: str) -> object:
        if name in provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].methods_by_name:
            return lambda request, context: None
        raise AttributeError(name)
