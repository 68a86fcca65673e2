"""The shared metrics mechanism: RPC interceptor outcomes, label helpers, /metrics server, ports."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from hybridinference.common.metrics import (
    LabelCache,
    LabelGuard,
    RpcMetricsInterceptor,
    configured_metrics_port,
    register_scrape_collector,
    serve_metrics,
    unregister_collector,
)
from hybridinference.common.settings import MeshSettings, ProviderWorkerSettings
from support.polling import until

HEALTH = "grpc.health.v1.Health"


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Behaves according to the requested service name, to produce each outcome."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.service == "raise":
            raise ValueError("bug")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if request.service == "hang":
            await asyncio.sleep(60)
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def test_interceptor_counts_each_outcome_with_its_code() -> None:
    before = {
        code: _sample(
            "hi_grpc_server_handled_total", grpc_service=HEALTH, grpc_method=method, grpc_code=code
        )
        for method, code in [
            ("Check", "OK"),
            ("Check", "NOT_FOUND"),
            ("Check", "UNKNOWN"),
            ("Watch", "OK"),
            ("Watch", "CANCELLED"),
        ]
    }
    watch_count = _sample(
        "hi_grpc_server_handling_seconds_count", grpc_service=HEALTH, grpc_method="Watch"
    )
    server = grpc.aio.server(interceptors=[RpcMetricsInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest())
            await stub.Check(health_pb2.HealthCheckRequest())
            for name in ("abort", "raise"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Check(health_pb2.HealthCheckRequest(service=name))
            replies = [r async for r in stub.Watch(health_pb2.HealthCheckRequest())]
            assert len(replies) == 2
            hanging = stub.Watch(health_pb2.HealthCheckRequest(service="hang"))
            await anext(aiter(hanging))
            assert (
                _sample(
                    "hi_grpc_server_requests_in_flight", grpc_service=HEALTH, grpc_method="Watch"
                )
                == 1
            )
            hanging.cancel()
            await until(
                lambda: (
                    _sample(
                        "hi_grpc_server_requests_in_flight",
                        grpc_service=HEALTH,
                        grpc_method="Watch",
                    )
                    == 0
                ),
                5,
                "the cancelled Watch to leave the in-flight gauge",
            )
    finally:
        await server.stop(None)

    def delta(method: str, code: str) -> float:
        now = _sample(
            "hi_grpc_server_handled_total", grpc_service=HEALTH, grpc_method=method, grpc_code=code
        )
        return now - before[code]

    assert delta("Check", "OK") == 2
    assert delta("Check", "NOT_FOUND") == 1
    assert delta("Check", "UNKNOWN") == 1
    assert delta("Watch", "OK") == 1
    assert delta("Watch", "CANCELLED") == 1
    assert (
        _sample("hi_grpc_server_handling_seconds_count", grpc_service=HEALTH, grpc_method="Watch")
        == watch_count + 2
    )


def test_label_guard_bounds_values() -> None:
    guard = LabelGuard(limit=2)
    assert guard.admit("a") == "a"
    assert guard.admit("b") == "b"
    assert guard.admit("c") == "other"
    assert guard.admit("a") == "a"
    assert guard.known("b") == "b"
    assert guard.known("zzz") == "other"


def test_label_cache_resolves_each_label_set_once() -> None:
    counter = Counter("hi_test_label_cache_total", "test", ["kind"])
    cache = LabelCache(counter)
    assert cache.get("x") is cache.get("x")
    cache.get("x").inc(3)
    assert _sample("hi_test_label_cache_total", kind="x") == 3


def test_scrape_collector_reads_live_state_and_survives_failures() -> None:
    state = {"depth": 4.0}

    def collect() -> list[Metric]:
        family = GaugeMetricFamily("hi_test_depth", "test")
        family.add_metric([], state["depth"])
        return [family]

    collector = register_scrape_collector("test-depth", collect)
    try:
        assert _sample("hi_test_depth") == 4
        state["depth"] = 7
        assert _sample("hi_test_depth") == 7
        del state["depth"]
        assert REGISTRY.get_sample_value("hi_test_depth") is None
    finally:
        unregister_collector(collector)


def test_serve_metrics_serves_text_and_tolerates_a_taken_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert serve_metrics("127.0.0.1", free, "test") == free
    body = urllib.request.urlopen(f"http://127.0.0.1:{free}/metrics", timeout=5).read().decode()
    assert "hi_grpc_server_handled_total" in body
    # Taken now (by the server above): logged, not fatal.
    assert serve_metrics("127.0.0.1", free, "test") == 0
    assert serve_metrics("127.0.0.1", 0, "test") == 0


def test_default_metrics_ports_per_service() -> None:
    settings = MeshSettings(
        providers=[
            ProviderWorkerSettings(name=name, port=port, endpoints=[{"id": name, "model": "m"}])
            for name, port in (("one", 50060), ("two", 50061), ("three", 50062))
        ],
        models=[],
    )
    assert configured_metrics_port("gateway", settings, None) == 9101
    assert configured_metrics_port("router", settings, None) == 9102
    assert configured_metrics_port("logger", settings, None) == 9104
    ports = [configured_metrics_port("providers", settings, w) for w in ("one", "two", "three")]
    assert ports == [9103, 9105, 9106]
    explicit = MeshSettings(router={"metrics_port": 0})
    assert configured_metrics_port("router", explicit, None) == 0
