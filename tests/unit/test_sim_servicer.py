"""ProviderServicer in-process: counters, error mapping and cancellation reaching the adapter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings, SimEndpointSettings
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter
from hybridinference.providers.servicer import ProviderServicer
from hybridinference.providers.sim import SimAdapter


class Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class FakeContext:
    async def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)


class FakeAdapter:
    """Streams `tokens` events, each after `delay_s`; records how the generation ended."""

    kind = "fake"
    model = "fake-model"

    def __init__(
        self, tokens: int = 3, delay_s: float = 0.0, error: Exception | None = None
    ) -> None:
        self.endpoint_id = "ep"
        self.tokens, self.delay_s, self.error = tokens, delay_s, error
        self.saw_cancel = False
        self.closed = False
        self.started = asyncio.Event()

    async def generate(
        self, request: provider_pb2.GenerateRequest
    ) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        self.started.set()
        try:
            for index in range(self.tokens):
                await asyncio.sleep(self.delay_s)
                yield provider_pb2.GenerateResponse(delta=f"t{index}")
            if self.error is not None:
                raise self.error
        except asyncio.CancelledError:
            self.saw_cancel = True
            raise
        finally:
            self.closed = True

    async def status(self) -> provider_pb2.EndpointStatus:
        return provider_pb2.EndpointStatus(
            endpoint="ep", provider="fake", model=self.model, healthy=True, waiting=4
        )

    async def list_models(self) -> list[str]:
        return [self.model]

    async def close(self) -> None:
        pass


def servicer_with(adapter: ProviderAdapter) -> ProviderServicer:
    return ProviderServicer({"ep": adapter})


def request(endpoint: str = "ep") -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(request_id="req-unit", endpoint=endpoint)


async def status(servicer: ProviderServicer) -> provider_pb2.EndpointStatus:
    reply = await servicer.GetStatus(provider_pb2.GetStatusRequest(endpoint="ep"), FakeContext())
    return reply.endpoints[0]


async def drain(servicer: ProviderServicer, req: provider_pb2.GenerateRequest) -> list[Any]:
    return [e async for e in servicer.Generate(req, FakeContext())]


def test_fake_adapter_fits_the_protocol() -> None:
    assert isinstance(FakeAdapter(), ProviderAdapter)


async def test_completed_and_status_merge() -> None:
    adapter = FakeAdapter()
    servicer = servicer_with(adapter)
    assert len(await drain(servicer, request())) == 3
    st = await status(servicer)
    assert (st.completed_total, st.running, st.waiting, st.model) == (1, 0, 4, "fake-model")


async def test_unknown_endpoint() -> None:
    servicer = servicer_with(FakeAdapter())
    with pytest.raises(Aborted) as info:
        await drain(servicer, request("nope"))
    assert info.value.status.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(Aborted):
        await servicer.GetStatus(provider_pb2.GetStatusRequest(endpoint="nope"), FakeContext())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            ServiceError(grpc.StatusCode.UNAVAILABLE, "down", "injected_abort"),
            grpc.StatusCode.UNAVAILABLE,
        ),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
async def test_failures_are_counted_and_mapped(error: Exception, code: grpc.StatusCode) -> None:
    servicer = servicer_with(FakeAdapter(tokens=1, error=error))
    with pytest.raises(Aborted) as info:
        await drain(servicer, request())
    assert info.value.status.code == code
    st = await status(servicer)
    assert (st.failed_total, st.completed_total, st.running) == (1, 0, 0)


async def test_task_cancel_reaches_the_adapter(caplog: pytest.LogCaptureFixture) -> None:
    adapter = FakeAdapter(tokens=100, delay_s=10)
    servicer = servicer_with(adapter)
    task = asyncio.create_task(drain(servicer, request()))
    await adapter.started.wait()
    assert (await status(servicer)).running == 1
    with caplog.at_level(logging.INFO, logger="hybridinference.providers.servicer"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert adapter.saw_cancel and adapter.closed
    st = await status(servicer)
    assert (st.cancelled_total, st.running, st.completed_total) == (1, 0, 0)
    assert "generation cancelled" in caplog.messages


async def test_closing_the_stream_at_a_yield_closes_the_adapter() -> None:
    adapter = FakeAdapter(tokens=100)
    servicer = servicer_with(adapter)
    stream = servicer.Generate(request(), FakeContext())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert adapter.closed
    st = await status(servicer)
    assert (st.cancelled_total, st.running) == (1, 0)


async def test_status_error_reports_unhealthy() -> None:
    class Broken(FakeAdapter):
        async def status(self) -> provider_pb2.EndpointStatus:
            raise OSError("connection refused")

    st = await status(servicer_with(Broken()))
    assert not st.healthy and "connection refused" in st.detail


async def test_hosts_sim_adapters() -> None:
    endpoint = ProviderEndpointSettings(id="ep", model="m", sim=SimEndpointSettings(ttft_ms=0))
    servicer = servicer_with(SimAdapter(endpoint))
    events = await drain(servicer, request())
    assert events[-1].usage.completion_tokens == len(events) - 1
    await servicer.close()
