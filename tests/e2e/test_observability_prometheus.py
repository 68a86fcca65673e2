"""A real Prometheus scrapes the running mesh; after known traffic the key series add up."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from hybridinference.common.settings import load_settings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.render.prometheus_config import render
from support import prometheus as prom
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import free_port

pytestmark = pytest.mark.skipif(
    not prom.installed(), reason="prometheus binary not installed (apt-get install prometheus)"
)

HTTP_REQUESTS = 5
GRPC_STREAMS = 3
SIM_TOKENS = 12  # output_tokens of sim-a in support/mesh.py


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, prom.Prometheus]]:
    tmp = tmp_path_factory.mktemp("observed")
    config = mesh_config(tmp)
    for section in ("gateway", "router", "logger"):
        config[section]["metrics_port"] = free_port()
    for worker in config["providers"]:
        worker["metrics_port"] = free_port()
    config["prometheus"] = {"port": free_port()}
    with running_mesh(tmp, config) as mesh:
        settings = load_settings(str(mesh.config_path))
        scrape = render(settings, rule_files=[], scrape_interval_s=0.5, alertmanager=None)
        with prom.running_prometheus(tmp, scrape, settings.prometheus.port) as prometheus:
            yield mesh, prometheus


def _traffic(mesh: Mesh) -> None:
    body = {"model": "hi-sim", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=mesh.http_url, timeout=30) as client:
        for _ in range(HTTP_REQUESTS):
            reply = client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
        missing = client.post("/v1/chat/completions", json={**body, "model": "no-such-model"})
        assert missing.status_code == 404
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatStreamRequest(
            model="hi-sim", messages=[chat_pb2.ChatMessage(role="user", content="hello")]
        )
        for _ in range(GRPC_STREAMS):
            assert list(stub.ChatStream(request))[-1].usage.completion_tokens == SIM_TOKENS


def _equals(prometheus: prom.Prometheus, expr: str, expected: float) -> None:
    """Polls until the query has the expected value (scrapes lag the traffic)."""
    seen: list[float | None] = []

    def probe() -> bool | None:
        value = prometheus.value(expr)
        seen.append(value)
        return True if value == expected else None

    try:
        poll(probe, 30, f"{expr} == {expected}", every_s=0.25)
    except AssertionError:
        raise AssertionError(f"{expr}: expected {expected}, last values {seen[-3:]}") from None


def test_every_target_is_up(observed: tuple[Mesh, prom.Prometheus]) -> None:
    _, prometheus = observed

    def all_up() -> list[dict[str, object]] | None:
        targets = prometheus.targets()
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = poll(all_up, 30, "every scrape target up", every_s=0.25)
    jobs = {t["labels"]["job"] for t in targets}  # type: ignore[index]
    assert jobs == {"gateway", "router", "providers", "logger", "envoy", "prometheus"}


def test_known_traffic_gives_exact_series(observed: tuple[Mesh, prom.Prometheus]) -> None:
    mesh, prometheus = observed
    _traffic(mesh)
    served = HTTP_REQUESTS + GRPC_STREAMS
    ok = 'code="OK",model="hi-sim",endpoint="sim-a"'
    _equals(prometheus, f"sum(hi_gateway_requests_total{{{ok}}})", served)
    _equals(
        prometheus,
        f'sum(hi_gateway_requests_total{{{ok},surface="openai"}})',
        HTTP_REQUESTS,
    )
    # The made-up model name never becomes a label value.
    _equals(prometheus, 'sum(hi_gateway_requests_total{code="NOT_FOUND",model="other"})', 1)
    assert prometheus.query('hi_gateway_requests_total{model="no-such-model"}') == []
    _equals(prometheus, 'sum(hi_gateway_time_to_first_token_seconds_count{model="hi-sim"})', served)
    _equals(
        prometheus, 'sum(hi_gateway_time_per_output_token_seconds_count{model="hi-sim"})', served
    )
    _equals(
        prometheus,
        'sum(hi_gateway_tokens_total{model="hi-sim",direction="completion"})',
        served * SIM_TOKENS,
    )
    _equals(prometheus, 'sum(hi_router_routed_total{model="hi-sim",endpoint="sim-a"})', served)
    _equals(
        prometheus,
        'sum(hi_provider_generations_total{endpoint="sim-a",outcome="completed"})',
        served,
    )
    # RPC metrics from the bootstrap's interceptor, per service.
    _equals(
        prometheus,
        'sum(hi_grpc_server_handled_total{job="gateway",grpc_method="ChatStream",grpc_code="OK"})',
        GRPC_STREAMS,
    )
    _equals(
        prometheus,
        # Non-streamed requests use the router's unary RPC, streams its server stream.
        'sum(hi_grpc_server_handled_total{job="router",grpc_method=~"Route|RouteUnary",grpc_code="OK"})',
        served,
    )
    # Every request (the refused one too) reaches the request log.
    _equals(prometheus, "sum(hi_logger_rows_written_total)", served + 1)
    _equals(prometheus, "hi_logger_db_connected", 1)
    _equals(prometheus, 'sum(hi_router_endpoint_healthy{endpoint="sim-a"})', 1)
    _equals(prometheus, 'sum(hi_router_breaker_state{endpoint="sim-a",state="closed"})', 1)
    # Envoy's own stats, from its admin port.
    cost = prometheus.value('sum(hi_gateway_cost_usd_total{model="hi-sim"})')
    assert cost is not None and cost > 0
    relayed = prometheus.value('sum(envoy_cluster_upstream_rq_total{envoy_cluster_name="gateway"})')
    assert relayed is not None and relayed >= served + 1
    p95 = prometheus.value(
        # Over all requests so far (cumulative buckets): rate() would need two scrapes apart.
        "histogram_quantile(0.95, sum by (le) "
        '(hi_gateway_time_to_first_token_seconds_bucket{model="hi-sim"}))'
    )
    # sim-a answers after 5 ms; through Envoy, gateway and router well under a second.
    assert p95 is not None and 0.001 < p95 < 1.0
