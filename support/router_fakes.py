"""Fake provider stubs for the router's unit tests (no tests here; shared by test_router_*)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ModelSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.breaker import CircuitBreaker, Clock
from hybridinference.router.endpoints import Endpoint, EndpointTable, Model, Worker
from hybridinference.router.health import HealthMonitor
from hybridinference.router.relay import Relay
from hybridinference.router.retry import RetryBudget
from hybridinference.router.strategies import create_strategy


def rpc_error(
    code: grpc.StatusCode, details: str = "boom", rich: ServiceError | None = None
) -> grpc.aio.AioRpcError:
    """An AioRpcError as a real peer would raise it, optionally with google.rpc details."""
    trailing = (
        grpc.aio.Metadata(*rich.to_status().trailing_metadata) if rich else grpc.aio.Metadata()
    )
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=details)


def tokens(
    n: int,
    model: str = "up-model",
    prompt_tokens: int = 7,
    finish: int = chat_pb2.FINISH_REASON_STOP,
) -> list[provider_pb2.GenerateResponse]:
    """n token events; the last carries usage and finish_reason, like a provider."""
    events = [provider_pb2.GenerateResponse(delta=f"t{i} ") for i in range(n)]
    events[0].model = model
    events[-1].usage.CopyFrom(
        chat_pb2.Usage(
            prompt_tokens=prompt_tokens, completion_tokens=n, total_tokens=prompt_tokens + n
        )
    )
    events[-1].finish_reason = finish  # type: ignore[assignment]
    return events


@dataclass
class Script:
    """What one Generate call does: emit events, then raise error, or hang until cancelled."""

    events: list[provider_pb2.GenerateResponse] = field(default_factory=lambda: tokens(3))
    error: grpc.aio.AioRpcError | None = None
    hang: bool = False
    # Waits for this event before the first event (a slow first token).
    gate: asyncio.Event | None = None
    # Sets this event just before raising ``error`` (lets a test order two calls).
    opens: asyncio.Event | None = None


class FakeCall:
    def __init__(self, script: Script, hanging: asyncio.Event) -> None:
        self.script = script
        self.cancelled = False
        self.finished = False
        self.hanging = hanging

    def cancel(self) -> bool:
        if self.finished or self.cancelled:
            return False
        self.cancelled = True
        return True

    async def _events(self) -> AsyncIterator[provider_pb2.GenerateResponse]:
        if self.script.gate is not None:
            await self.script.gate.wait()
        for event in self.script.events:
            yield event
        if self.script.error is not None:
            self.finished = True
            if self.script.opens is not None:
                self.script.opens.set()
            raise self.script.error
        if self.script.hang:
            self.hanging.set()
            await asyncio.Event().wait()
        self.finished = True

    def __aiter__(self) -> AsyncIterator[provider_pb2.GenerateResponse]:
        return self._events()


class FakeUnaryCall:
    """A GenerateUnary call: the script's events merged into one reply (as a provider does)."""

    def __init__(self, stream: FakeCall) -> None:
        # The same call object the stub recorded, so tests see its cancellation.
        self.stream = stream

    def cancel(self) -> bool:
        return self.stream.cancel()

    async def _reply(self) -> provider_pb2.GenerateUnaryResponse:
        merged = provider_pb2.GenerateResponse()
        parts: list[str] = []
        async for event in self.stream:
            parts.append(event.delta)
            merged.model = merged.model or event.model
            if event.HasField("usage"):
                merged.usage.CopyFrom(event.usage)
            merged.finish_reason = event.finish_reason or merged.finish_reason
        merged.delta = "".join(parts)
        return provider_pb2.GenerateUnaryResponse(response=merged)

    def __await__(self) -> Generator[Any, None, provider_pb2.GenerateUnaryResponse]:
        return self._reply().__await__()


class FakeStub:
    """Per-endpoint scripts for Generate; a settable reply or error for GetStatus."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Script]] = {}
        self.calls: list[tuple[provider_pb2.GenerateRequest, float | None, FakeCall]] = []
        # Set when a call reaches a hanging script, so tests wait on it instead of polling.
        self.hanging = asyncio.Event()
        self.status: provider_pb2.GetStatusResponse | grpc.aio.AioRpcError = (
            provider_pb2.GetStatusResponse()
        )

    def script(self, endpoint: str, *scripts: Script) -> None:
        self.scripts.setdefault(endpoint, []).extend(scripts)

    def Generate(
        self, request: provider_pb2.GenerateRequest, *, timeout: float | None = None
    ) -> FakeCall:
        queue = self.scripts.get(request.endpoint) or [Script()]
        script = queue.pop(0) if len(queue) > 1 else queue[0]
        call = FakeCall(script, self.hanging)
        self.calls.append((request, timeout, call))
        return call

    def GenerateUnary(
        self, request: provider_pb2.GenerateUnaryRequest, *, timeout: float | None = None
    ) -> FakeUnaryCall:
        return FakeUnaryCall(self.Generate(request.request, timeout=timeout))

    async def GetStatus(
        self,
        request: provider_pb2.GetStatusRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors the gRPC stub's signature
    ) -> provider_pb2.GetStatusResponse:
        if isinstance(self.status, grpc.aio.AioRpcError):
            raise self.status
        return self.status

    def endpoints_called(self) -> list[str]:
        return [request.endpoint for request, _, _ in self.calls]


def make_table(
    workers: dict[str, list[str]],
    models: dict[str, list[str]],
    prices: dict[str, tuple[float, float]] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    clock: Clock = time.monotonic,
    locality: dict[str, str] | None = None,
) -> tuple[EndpointTable, dict[str, FakeStub]]:
    """A table of fake workers (name → endpoint ids) and models (name → endpoint ids).

    ``options`` holds ModelSettings fields per model (e.g. strategy, hedging); breakers use
    ``clock`` and the default thresholds (3 failures, 30 s).
    """
    stubs: dict[str, FakeStub] = {}
    built: list[Worker] = []
    for name, ids in workers.items():
        stub = FakeStub()
        stubs[name] = stub
        worker = Worker(name, "sim", f"{name}:1", stub)
        for endpoint_id in ids:
            prompt, completion = (prices or {}).get(endpoint_id, (0.0, 0.0))
            worker.endpoints.append(
                Endpoint(
                    endpoint_id,
                    worker,
                    f"{endpoint_id}-model",
                    prompt,
                    completion,
                    locality=(locality or {}).get(endpoint_id, "cloud"),
                    breaker=CircuitBreaker(endpoint_id, 3, 30.0, clock),
                )
            )
        built.append(worker)
    by_id = {e.id: e for w in built for e in w.endpoints}
    built_models = []
    for name, ids in models.items():
        settings = ModelSettings(name=name, endpoints=ids, **(options or {}).get(name, {}))
        budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_burst)
        endpoints = tuple(by_id[i] for i in ids)
        built_models.append(
            Model(name, endpoints, settings.strategy, settings.owned_by, settings, budget)
        )
    return EndpointTable(built, built_models), stubs


class Sleeps:
    """An injected sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_relay(
    table: EndpointTable,
    clock: Clock = time.monotonic,
    sleeps: Sleeps | None = None,
    rng: random.Random | None = None,
) -> tuple[Relay, HealthMonitor]:
    health = HealthMonitor(table, interval_s=3600, timeout_s=1.0)
    rng = rng or random.Random(7)
    strategies = {
        name: create_strategy(m.strategy, m.options, rng) for name, m in table.models.items()
    }
    relay = Relay(table, health, strategies, clock=clock, sleep=sleeps or Sleeps(), rng=rng)
    return relay, health
