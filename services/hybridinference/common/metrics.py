"""Prometheus metrics shared by every service: the /metrics server, RPC metrics, and helpers.

Every process serves its own /metrics (prometheus-client's process-global registry) from a
daemon thread on ``<service>.metrics_port``, so a scrape never waits on the event loop. RPC-level
metrics come from one server interceptor installed by the bootstrap; services add their domain
metrics in one ``metrics.py`` module each, using the helpers below to keep the hot path cheap:

- ``LabelCache`` resolves ``.labels(...)`` once per label set (prometheus-client's own lookup
  takes a lock and validates on every call);
- ``LabelGuard`` bounds a label whose values come from clients (model names);
- ``register_scrape_collector`` reads state the services already keep (breaker states, queue
  sizes, ...) at scrape time instead of mirroring every change into a gauge.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hybridinference.common.settings import MeshSettings

log = logging.getLogger(__name__)

# Seconds, for whole calls: from a 1 ms unary reply to a 5 minute stream.
DURATION_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
)  # fmt: skip

M = TypeVar("M", Counter, Gauge, Histogram)


class LabelCache(Generic[M]):
    """The labelled children of one metric, each resolved once."""

    __slots__ = ("_children", "_metric")
    _metric: M
    _children: dict[tuple[str, ...], M]

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children = {}

    def get(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class LabelGuard:
    """Bounds the values one label may take: the first ``limit`` distinct values are kept, any
    later one becomes ``overflow``, so a client sending random names cannot grow the series."""

    def __init__(self, limit: int, overflow: str = "other") -> None:
        self._limit = limit
        self._overflow = overflow
        self._known: set[str] = set()

    def admit(self, value: str) -> str:
        if value in self._known:
            return value
        if len(self._known) >= self._limit:
            return self._overflow
        self._known.add(value)
        return value

    def known(self, value: str) -> str:
        """The value if it was admitted before, else the overflow value (admits nothing)."""
        return value if value in self._known else self._overflow


class _ScrapeCollector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: the registry would otherwise call collect() at registration.
        return []

    def collect(self) -> Iterable[Metric]:
        # Runs on the /metrics thread while the event loop may be changing what it reads; a
        # failed read costs one scrape of these series, never the process.
        try:
            return list(self._collect())
        except Exception:
            log.exception("metrics collector failed")
            return []


_scrape_collectors: dict[str, Collector] = {}


def register_scrape_collector(key: str, collect: Callable[[], Iterable[Metric]]) -> Collector:
    """Registers a function that builds metric families from live state at each scrape.

    One collector per ``key``: registering the key again (a component built twice in one
    process, as tests do) replaces the previous one rather than duplicating its series.
    """
    previous = _scrape_collectors.pop(key, None)
    if previous is not None:
        REGISTRY.unregister(previous)
    collector = _scrape_collectors[key] = _ScrapeCollector(collect)
    REGISTRY.register(collector)
    return collector


def unregister_collector(collector: Collector) -> None:
    for key, registered in list(_scrape_collectors.items()):
        if registered is collector:
            del _scrape_collectors[key]
    REGISTRY.unregister(collector)


def serve_metrics(host: str, port: int, service: str) -> int:
    """Serves /metrics on ``host:port`` from a daemon thread; 0 = off. Returns the bound port
    (0 when off or when the port is taken).

    A port in use is logged, not fatal: metrics must never take the request path down, and
    Prometheus' ``up == 0`` for the target raises the alarm instead.
    """
    if port == 0:
        return 0
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:
        log.error(
            "cannot serve /metrics; continuing without",
            extra={"service": service, "address": f"{host}:{port}", "error": str(error)},
        )
        return 0
    bound = int(server.server_address[1])
    log.info("metrics listening", extra={"metrics_address": f"{host}:{bound}"})
    return bound


# RPC-level metrics, one set per process, filled by the bootstrap's interceptor.
RPC_HANDLED = Counter(
    "hi_grpc_server_handled_total",
    "gRPC calls completed by this server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "hi_grpc_server_handling_seconds",
    "Time from the start of a gRPC call to its end (whole stream for streaming calls).",
    ["grpc_service", "grpc_method"],
    buckets=DURATION_BUCKETS_S,
)
RPC_IN_FLIGHT = Gauge(
    "hi_grpc_server_requests_in_flight",
    "gRPC calls being handled by this server now.",
    ["grpc_service", "grpc_method"],
)

_OK = grpc.StatusCode.OK


class _MethodMetrics:
    """The children of the RPC metrics for one method, resolved once."""

    __slots__ = ("_handled", "_labels", "in_flight", "seconds")

    def __init__(self, full_method: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self._labels = (service, method)
        self.in_flight = RPC_IN_FLIGHT.labels(service, method)
        self.seconds = RPC_SECONDS.labels(service, method)
        self._handled: dict[grpc.StatusCode, Counter] = {}

    def done(self, code: grpc.StatusCode, started: float) -> None:
        self.in_flight.dec()
        self.seconds.observe(time.perf_counter() - started)
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = RPC_HANDLED.labels(*self._labels, code.name)
        counter.inc()


def _failure_code(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    # context.abort() raises after setting the code; a client that went away shows up as a
    # cancellation (CancelledError, or GeneratorExit when gRPC drops a stream); anything else
    # is what gRPC reports to the client for an unhandled exception.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _success_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else _OK


Behavior = Callable[..., Any]


def _wrap_stream_out(behavior: Behavior, metrics: _MethodMetrics) -> Behavior:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        metrics.in_flight.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            async for response in behavior(request, context):
                yield response
            code = _success_code(context)
        except BaseException as error:
            code = _failure_code(error, context)
            raise
        finally:
            metrics.done(code, started)

    return handler


def _wrap_coroutine(behavior: Behavior, metrics: _MethodMetrics) -> Behavior:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        metrics.in_flight.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behavior(request, context)
            code = _success_code(context)
            return response
        except BaseException as error:
            code = _failure_code(error, context)
            raise
        finally:
            metrics.done(code, started)

    return handler


def _wrap(behavior: Behavior | None, metrics: _MethodMetrics) -> Behavior | None:
    if behavior is None:
        return None
    if inspect.isasyncgenfunction(behavior):
        return _wrap_stream_out(behavior, metrics)
    if inspect.iscoroutinefunction(behavior):
        return _wrap_coroutine(behavior, metrics)
    # A synchronous handler would run in gRPC's executor; none of ours is, so leave it alone.
    return behavior


def _instrument(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    metrics = _MethodMetrics(method)
    return handler._replace(  # RpcMethodHandler is a namedtuple in grpc's implementation.
        unary_unary=_wrap(handler.unary_unary, metrics),
        unary_stream=_wrap(handler.unary_stream, metrics),
        stream_unary=_wrap(handler.stream_unary, metrics),
        stream_stream=_wrap(handler.stream_stream, metrics),
    )


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts, times and tracks in-flight calls of every method of the server it is installed
    on. The instrumented handler is built once per method and reused for every call."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            # Unknown method: gRPC answers UNIMPLEMENTED; no series for names clients invent.
            return None
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        instrumented = _instrument(handler, method)
        self._handlers[method] = (handler, instrumented)
        return instrumented


def configured_metrics_port(service: str, settings: MeshSettings, worker: str | None) -> int:
    """The /metrics port of a service process (``worker``: the provider worker's name)."""
    if service == "providers" and worker is not None:
        return settings.worker(worker).metrics_port or 0
    if service == "gateway":
        return settings.gateway.metrics_port
    if service == "router":
        return settings.router.metrics_port
    if service == "logger":
        return settings.logger.metrics_port
    return 0
