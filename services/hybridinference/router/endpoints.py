"""The endpoint table: every configured provider endpoint, the worker hosting it, and the models.

Built once from the mesh settings. Each worker gets exactly one channel and stub, shared by all of
its endpoints and reused for every request (a channel per request costs ~0.65 ms per hop).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from hybridinference.common.channels import CHANNEL_OPTIONS, dial
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.settings import MeshSettings, ModelSettings, ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.providers.hosted_in_router import (
    HostWorker,
    WorkerInRouterChannel,
    host_worker_in_router,
)
from hybridinference.router.breaker import CircuitBreaker, Clock
from hybridinference.router.retry import RetryBudget
from hybridinference.router.stats import EndpointStats, Service


class GenerateCall(Protocol):
    """What the router needs from a streaming Generate call (a grpc.aio call or a test fake)."""

    def __aiter__(self) -> AsyncIterator[provider_pb2.GenerateResponse]: ...

    def cancel(self) -> bool: ...


class GenerateUnaryCall(Protocol):
    """A unary GenerateUnary call: awaited for the whole reply, cancellable."""

    def __await__(self) -> Any: ...

    def cancel(self) -> bool: ...


class ProviderStub(Protocol):
    """The subset of ProviderServiceStub the router uses, so tests can inject fakes."""

    def Generate(
        self, request: provider_pb2.GenerateRequest, *, timeout: float | None = None
    ) -> GenerateCall: ...

    def GenerateUnary(
        self, request: provider_pb2.GenerateUnaryRequest, *, timeout: float | None = None
    ) -> GenerateUnaryCall: ...

    def GetStatus(
        self, request: provider_pb2.GetStatusRequest, *, timeout: float | None = None
    ) -> Awaitable[provider_pb2.GetStatusResponse]: ...


@dataclass(eq=False)
class Worker:
    """One provider worker process; its endpoints share its channel."""

    name: str
    kind: str
    address: str
    stub: ProviderStub
    # None for test fakes; otherwise the channel to close on shutdown.
    channel: Any = None
    endpoints: list[Endpoint] = field(default_factory=list)
    # The TLS section the channel was dialled with (a reload that changes it reconnects).
    tls: TlsSettings | None = None

    def connected(self) -> bool:
        """False when the channel is known not to reach the worker (fakes count as connected)."""
        if self.channel is None:
            return True
        state = self.channel.get_state(try_to_connect=False)
        return bool(state == grpc.ChannelConnectivity.READY)


@dataclass(eq=False)
class Endpoint:
    """A provider endpoint: static configuration plus the router's live view of it."""

    id: str
    worker: Worker
    # The upstream's model name.
    model: str
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0
    # Optimistic until the first probe: probes run right after start, and a wrong guess only
    # costs one fast-failing attempt.
    healthy: bool = True
    health_detail: str = ""
    in_flight: int = 0
    requests_total: int = 0
    failures_total: int = 0
    # "local" (own hardware, e.g. vLLM) or "cloud"; local_first keeps traffic local first.
    locality: str = "cloud"
    stats: EndpointStats = field(default_factory=EndpointStats)
    breaker: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker("", 3, 30.0, time.monotonic)
    )
    # Clock time before which the endpoint asked (RetryInfo) not to be sent new requests.
    retry_after_until: float = 0.0
    hedges_total: int = 0
    # Generations served at once (configured); None: learned from probes, else unlimited.
    max_concurrency: int | None = None
    # USD spent on hedge attempts that lost (their prompts were billed, their output dropped).
    wasted_usd: float = 0.0

    def __post_init__(self) -> None:
        if not self.breaker.name:
            self.breaker.name = self.id

    @property
    def capacity(self) -> int | None:
        """Generations served at once, when known; beyond it requests queue."""
        return self.max_concurrency or self.stats.learned_capacity

    def load(self) -> int:
        """Requests here now: the router's own in flight (live) plus what the last status probe
        saw beyond them (other routers' requests). The probe's total itself is not used: it
        lags, and a queue that drained a moment ago would still look full."""
        return self.in_flight + self.stats.others

    @property
    def provider(self) -> str:
        return self.worker.kind

    @property
    def worker_address(self) -> str:
        return self.worker.address

    def cost_usd(self, usage: chat_pb2.Usage) -> float:
        return (
            usage.prompt_tokens * self.price_prompt_per_1m
            + usage.completion_tokens * self.price_completion_per_1m
        ) / 1_000_000


def endpoint_locality(kind: str, settings: ProviderEndpointSettings) -> str:
    if settings.locality != "auto":
        return settings.locality
    # Only vLLM runs on our own hardware; every other kind is a paid remote API (or a sim).
    return "local" if kind == "vllm" else "cloud"


@dataclass(frozen=True)
class Model:
    """A model name clients ask for and the endpoints that serve it, in fallback order."""

    name: str
    endpoints: tuple[Endpoint, ...]
    strategy: str
    owned_by: str
    # The model's routing options from the config (defaults when built by hand in tests).
    settings: ModelSettings | None = None
    budget: RetryBudget = field(default_factory=lambda: RetryBudget(0.2, 10.0))

    @property
    def options(self) -> ModelSettings:
        if self.settings is not None:
            return self.settings
        return ModelSettings(name=self.name, endpoints=[e.id for e in self.endpoints])

    @property
    def providers(self) -> list[str]:
        return list(dict.fromkeys(e.provider for e in self.endpoints))


# (address, the worker's TLS section) -> (channel, stub).
Connect = Callable[[str, TlsSettings | None], tuple[Any, ProviderStub]]


def connect_worker(address: str, tls: TlsSettings | None = None) -> tuple[Any, ProviderStub]:
    """A channel to a worker: mTLS when its ``tls`` section serves TLS, else plaintext."""
    channel = dial(address, tls, CHANNEL_OPTIONS)
    stub: ProviderStub = provider_pb2_grpc.ProviderServiceStub(channel)
    return channel, stub


class EndpointTable:
    """Workers, endpoints (config order) and models, looked up by name."""

    def __init__(self, workers: list[Worker], models: list[Model]) -> None:
        self.workers = {w.name: w for w in workers}
        self.endpoints = {e.id: e for w in workers for e in w.endpoints}
        self.models = {m.name: m for m in models}

    @classmethod
    def from_settings(
        cls,
        settings: MeshSettings,
        connect: Connect = connect_worker,
        clock: Clock = time.monotonic,
        previous: EndpointTable | None = None,
        host_worker: HostWorker = host_worker_in_router,
    ) -> EndpointTable:
        """Builds the table; with ``previous`` (a config reload), workers at the same address
        keep their channel and endpoints keep their live state (counters, EWMAs, breaker).
        A worker hosted in the router is kept only when its settings are unchanged (its
        adapters live here, built from them)."""
        router = settings.router
        old_workers = previous.workers if previous is not None else {}
        workers: list[Worker] = []
        for worker_settings in settings.providers:
            old = old_workers.get(worker_settings.name)
            channel: Any
            stub: ProviderStub
            if worker_settings.colocated:
                address = f"colocated:{worker_settings.name}"
                keep = (
                    old is not None
                    and isinstance(old.channel, WorkerInRouterChannel)
                    and old.channel.settings == worker_settings
                )
            else:
                address = worker_settings.address
                # A changed TLS section needs a new channel too.
                keep = old is not None and old.address == address and old.tls == worker_settings.tls
            if old is not None and keep and old.kind == worker_settings.kind:
                channel, stub = old.channel, old.stub
                old_endpoints = {e.id: e for e in old.endpoints}
            else:
                channel, stub = (
                    host_worker(worker_settings)
                    if worker_settings.colocated
                    else connect(address, worker_settings.tls)
                )
                old_endpoints = {}
            worker = Worker(
                worker_settings.name,
                worker_settings.kind,
                address,
                stub,
                channel,
                tls=worker_settings.tls,
            )
            for e in worker_settings.endpoints:
                endpoint = old_endpoints.get(e.id) or Endpoint(
                    id=e.id,
                    worker=worker,
                    model=e.model,
                    stats=EndpointStats(
                        alpha=router.ewma_alpha, service=Service(router.stats_half_life_s)
                    ),
                    breaker=CircuitBreaker(
                        e.id, router.breaker_failure_threshold, router.breaker_cooldown_s, clock
                    ),
                )
                endpoint.worker = worker
                endpoint.model = e.model
                endpoint.price_prompt_per_1m = e.price_prompt_per_1m
                endpoint.price_completion_per_1m = e.price_completion_per_1m
                endpoint.locality = endpoint_locality(worker_settings.kind, e)
                endpoint.max_concurrency = e.max_concurrency or (
                    e.sim.max_concurrency if worker_settings.kind == "sim" else None
                )
                endpoint.breaker.configure(
                    router.breaker_failure_threshold, router.breaker_cooldown_s
                )
                worker.endpoints.append(endpoint)
            workers.append(worker)
        by_id = {e.id: e for w in workers for e in w.endpoints}
        old_models = previous.models if previous is not None else {}
        models = []
        for m in settings.models:
            budget = RetryBudget(m.retry_budget_ratio, m.retry_budget_burst)
            if (old_model := old_models.get(m.name)) is not None:
                # Keep the balance across a reload, so a reload is no way to refill it.
                budget.balance = min(budget.burst, old_model.budget.balance)
            endpoints = tuple(by_id[i] for i in m.endpoints)
            models.append(Model(m.name, endpoints, m.strategy, m.owned_by, m, budget))
        return cls(workers, models)

    def channels_dropped_since(self, previous: EndpointTable) -> list[Worker]:
        """Workers of ``previous`` whose channel this table no longer uses."""
        kept = {id(w.channel) for w in self.workers.values()}
        return [w for w in previous.workers.values() if id(w.channel) not in kept]

    async def close(self) -> None:
        for worker in self.workers.values():
            if worker.channel is not None:
                await worker.channel.close()
