"""``hybridinference status``: is every service up, and how is each provider endpoint doing."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridinference.cli import rpc
from hybridinference.cli.table import format_table
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.settings import MeshSettings
from hybridinference.router.v1 import router_pb2, router_pb2_grpc

_TIMEOUT_S = 2.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("status", help="health of every service and endpoint")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Check:
    name: str
    address: str
    ok: bool
    detail: str


def targets(settings: MeshSettings) -> list[tuple[str, str]]:
    """(name, gRPC address) of every service of the mesh."""

    return [
        ("gateway", settings.gateway.dial_address),
        *(() if settings.router.colocated else (("router", settings.router.dial_address),)),
        ("logger", settings.logger.dial_address),
        *(
            (f"provider:{w.name}", w.dial_address)
            for w in settings.providers
            if not w.colocated  # inside the router, checked with it
        ),
    ]


def _tls(settings: MeshSettings, name: str) -> TlsSettings | None:
    """The TLS section of the service ``targets`` calls ``name`` (mTLS layouts)."""
    if name.startswith("provider:"):
        worker = name.split(":", 1)[1]
        return next((w.tls for w in settings.providers if w.name == worker), None)
    section = getattr(settings, name, None)
    return getattr(section, "tls", None)


def check_grpc(name: str, address: str, tls: TlsSettings | None = None) -> Check:
    with rpc.channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=_TIMEOUT_S)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            return Check(name, address, False, code.name if code else str(error))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Check(name, address, reply.status == health_pb2.HealthCheckResponse.SERVING, status)


def check_envoy(settings: MeshSettings) -> Check:
    address = f"127.0.0.1:{settings.envoy.admin_port}"
    try:
        with urllib.request.urlopen(f"http://{address}/ready", timeout=_TIMEOUT_S) as reply:
            body = reply.read().decode(errors="replace").strip()
            return Check("envoy", address, reply.status == 200, body or str(reply.status))
    except urllib.error.HTTPError as error:
        return Check("envoy", address, False, f"HTTP {error.code}")
    except OSError as error:
        reason = getattr(error, "reason", error)
        return Check("envoy", address, False, str(reason))


def services_table(checks: list[Check]) -> str:
    rows = [(c.name, c.address, "up" if c.ok else "DOWN", c.detail) for c in checks]
    return format_table(["service", "address", "state", "detail"], rows)


def endpoints_table(endpoints: list[router_pb2.EndpointState]) -> str:
    rows = [
        (
            e.id,
            e.provider,
            e.model,
            e.healthy,
            e.health_detail or "-",
            e.in_flight,
            e.requests_total,
            e.failures_total,
            _circuit(e),
            e.locality or "-",
            e.waiting,
            _ms(e.ttft_ewma_ms),
            _ms(e.ttft_p95_ms),
            _ms(e.tpot_ewma_ms),
        )
        for e in endpoints
    ]
    headers = [
        "endpoint",
        "provider",
        "model",
        "healthy",
        "detail",
        "in_flight",
        "requests",
        "failures",
        "circuit",
        "where",
        "waiting",
        "ttft_ms",
        "ttft_p95",
        "tpot_ms",
    ]
    return format_table(headers, rows)


def _circuit(e: router_pb2.EndpointState) -> str:
    """closed / half_open / open (retry in N s), from the router's breaker."""
    if e.circuit_state == router_pb2.CIRCUIT_STATE_UNSPECIFIED:
        return "-"
    name = router_pb2.CircuitState.Name(e.circuit_state).removeprefix("CIRCUIT_STATE_").lower()
    if e.circuit_state == router_pb2.CIRCUIT_STATE_OPEN:
        return f"{name} ({e.circuit_retry_in_s:.0f}s)"
    return name


def _ms(value: float) -> str:
    return f"{value:.1f}" if value else "-"


def run(args: argparse.Namespace, settings: MeshSettings) -> int:
    checks = [
        check_grpc(name, address, _tls(settings, name)) for name, address in targets(settings)
    ]
    checks.append(check_envoy(settings))
    print(services_table(checks))
    healthy = all(c.ok for c in checks)

    router = targets(settings)[1][1]
    with rpc.channel(router, settings.router.tls) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            reply = stub.ListEndpoints(router_pb2.ListEndpointsRequest(), timeout=_TIMEOUT_S)
        except grpc.RpcError as error:
            print(f"\nendpoints: unknown ({rpc.describe(error, router)})")
            return 1
    print()
    print(endpoints_table(list(reply.endpoints)))
    # An unhealthy endpoint is something down too, even if fallbacks still serve its models.
    return 0 if healthy and all(e.healthy for e in reply.endpoints) else 1
