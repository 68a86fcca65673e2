"""Scale-out for real: two gateways and two routers behind one Envoy running the derived config.

The config is what hybridinference.render.envoy_variants derives from deploy/envoy/envoy.yaml (the
same code as the committed envoy.scaleout.yaml), rendered for free ports. Requests must be spread
over both replicas of each tier, and a replica that dies must be routed around: no failed
request, and Envoy's active gRPC health check marks it unhealthy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hybridinference.common.settings import GatewaySettings, load_settings
from hybridinference.render import envoy_config, envoy_variants
from hybridinference.render.envoy_variants import HostPort, ScaleOut
from support.procs import (
    REPO,
    ServiceProcess,
    free_port,
    start_service,
    wait_healthy,
    write_config,
)
from tests.integration.test_envoy_config import ENVOY


def _no_metrics(section: dict[str, Any]) -> dict[str, Any]:
    # Several replicas on one host (and other tests) must not fight over /metrics ports.
    if "metrics_port" in GatewaySettings.model_fields:
        section["metrics_port"] = 0
    return section


@dataclass
class ScaledMesh:
    gateways: list[ServiceProcess]
    routers: list[ServiceProcess]
    envoy: subprocess.Popen[bytes]
    envoy_port: int
    admin_port: int

    def chat(self, client: httpx.Client) -> httpx.Response:
        return client.post(
            f"http://127.0.0.1:{self.envoy_port}/v1/chat/completions",
            json={
                "model": "hi-sim",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )

    def hosts(self, cluster: str) -> dict[int, dict[str, str]]:
        """Envoy's view of each host of a cluster: port → {rq_total, health_flags, ...}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/clusters") as reply:
            text = reply.read().decode()
        hosts: dict[int, dict[str, str]] = {}
        for line in text.splitlines():
            parts = line.split("::")
            # Host lines are cluster::ip:port::stat::value (others: cluster::default_priority::…).
            if len(parts) == 4 and parts[0] == cluster and parts[1][-1:].isdigit():
                port = int(parts[1].rpartition(":")[2])
                hosts.setdefault(port, {})[parts[2]] = parts[3]
        return hosts

    def requests_per_host(self, cluster: str) -> dict[int, int]:
        return {port: int(stats["rq_total"]) for port, stats in self.hosts(cluster).items()}


def _wait_ready(admin_port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "envoy exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("envoy not ready")


@pytest.fixture
def scaled(tmp_path: Path) -> Iterator[ScaledMesh]:
    ports = {name: free_port() for name in ("g1", "g2", "r1", "r2", "rl", "envoy", "admin")}
    config: dict[str, Any] = {
        "gateway": _no_metrics(
            {
                "port": ports["g1"],
                "grace_period_s": 1,
                "router_address": f"127.0.0.1:{ports['rl']}",
                "log_spool_dir": str(tmp_path / "spool-{port}"),
            }
        ),
        "router": _no_metrics({"port": ports["r1"], "grace_period_s": 1, "health_interval_s": 0.5}),
        "logger": _no_metrics({"port": free_port(), "sqlite_path": str(tmp_path / "requests.db")}),
        "envoy": {"port": ports["envoy"], "admin_port": ports["admin"], "base_id": ports["envoy"]},
        "providers": [
            _no_metrics(
                {
                    "name": "sim",
                    "port": free_port(),
                    "endpoints": [
                        {"id": "sim-a", "model": "hi-sim-1", "sim": {"ttft_ms": 1, "itl_ms": 0}}
                    ],
                }
            )
        ],
        "models": [{"name": "hi-sim", "endpoints": ["sim-a"]}],
    }
    path = write_config(tmp_path / "mesh.yaml", config)
    settings = load_settings(str(path))
    os.environ.pop("HI_CONFIG", None)
    scale = ScaleOut(
        gateways=[HostPort("127.0.0.1", ports["g1"]), HostPort("127.0.0.1", ports["g2"])],
        router_listener=HostPort("127.0.0.1", ports["rl"]),
        routers=[HostPort("127.0.0.1", ports["r1"]), HostPort("127.0.0.1", ports["r2"])],
    )
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(
        envoy_variants.dump(envoy_variants.render(settings, scale, envoy_config.DESCRIPTOR), "test")
    )

    def addr(port: int) -> str:
        return f"127.0.0.1:{port}"

    with ExitStack() as stack:

        def start(args: list[str], port: int, name: str) -> ServiceProcess:
            # All at once (the gateways and routers find their peers lazily); waited for below.
            service = start_service(args, path, addr(port), tmp_path, name, wait=False)
            stack.callback(service.stop, signal.SIGKILL)
            return service

        others = [
            start(["hybridinference.logger"], config["logger"]["port"], "logger"),
            start(
                ["hybridinference.providers", "--worker", "sim"],
                config["providers"][0]["port"],
                "sim",
            ),
        ]
        routers = [
            start(["hybridinference.router"], ports["r1"], "router1"),
            start(["hybridinference.router", "--port", str(ports["r2"])], ports["r2"], "router2"),
        ]
        gateways = [
            start(["hybridinference.gateway"], ports["g1"], "gateway1"),
            start(["hybridinference.gateway", "--port", str(ports["g2"])], ports["g2"], "gateway2"),
        ]
        for service in [*others, *routers, *gateways]:
            try:
                wait_healthy(service.address, timeout_s=60, proc=service.proc)
            except Exception:
                raise RuntimeError(f"{service.name} failed to start:\n{service.logs()}") from None
        envoy_log = (tmp_path / "envoy.log").open("wb")
        stack.callback(envoy_log.close)
        envoy = subprocess.Popen(
            [
                ENVOY,
                "-c",
                str(rendered),
                "--concurrency",
                "1",
                "--base-id",
                str(ports["envoy"]),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            stdout=envoy_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(envoy.wait)
        stack.callback(envoy.kill)
        _wait_ready(ports["admin"], envoy)
        yield ScaledMesh(gateways, routers, envoy, ports["envoy"], ports["admin"])


def _wait_unhealthy(mesh: ScaledMesh, cluster: str, port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "failed_active_hc" in mesh.hosts(cluster)[port].get("health_flags", ""):
            return
        time.sleep(0.1)
    raise AssertionError(f"{cluster} host :{port} still healthy: {mesh.hosts(cluster)[port]}")


def test_requests_are_spread_and_a_dead_replica_is_routed_around(scaled: ScaledMesh) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            reply = scaled.chat(client)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"]

        # Both replicas of each tier took a share (least-request over two idle hosts alternates).
        for cluster in ("gateway", "router"):
            spread = scaled.requests_per_host(cluster)
            assert len(spread) == 2, spread
            assert all(count >= 3 for count in spread.values()), (cluster, spread)

        # One gateway and one router die without draining; no client request may fail.
        dead_gateway, dead_router = scaled.gateways[0], scaled.routers[1]
        dead_gateway.stop(signal.SIGKILL)
        dead_router.stop(signal.SIGKILL)
        for _ in range(20):
            reply = scaled.chat(client)
            assert reply.status_code == 200, reply.text

        gateway_port = int(dead_gateway.address.rpartition(":")[2])
        router_port = int(dead_router.address.rpartition(":")[2])
        _wait_unhealthy(scaled, "gateway", gateway_port)
        _wait_unhealthy(scaled, "router", router_port)
        before = scaled.requests_per_host("gateway")
        for _ in range(10):
            assert scaled.chat(client).status_code == 200
        after = scaled.requests_per_host("gateway")
        # Once marked unhealthy, the dead replica gets no attempts at all.
        assert after[gateway_port] == before[gateway_port]

        # With every gateway down, panic mode is off: Envoy answers at once itself (in OpenAI's
        # error shape) instead of trying dead hosts.
        live_gateway = scaled.gateways[1]
        live_gateway.stop(signal.SIGKILL)
        _wait_unhealthy(scaled, "gateway", int(live_gateway.address.rpartition(":")[2]))
        reply = scaled.chat(client)
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        error = reply.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "no_healthy_upstream")


def test_committed_scaleout_config_lists_both_replica_tiers() -> None:
    config = yaml.safe_load((envoy_variants.ENVOY_DIR / "envoy.scaleout.yaml").read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name in ("gateway", "router"):
        cluster = clusters[name]
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert len(endpoints) == 2
        assert cluster["health_checks"][0]["grpc_health_check"] == {}
    listeners = {item["name"] for item in config["static_resources"]["listeners"]}
    assert listeners == {"ingress", "router"}
