"""What the launcher runs, derived from the settings alone (pure, so it is unit-testable)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.settings import MeshSettings, dial_address


@dataclass(frozen=True)
class ChildSpec:
    """One process of the mesh."""

    name: str
    argv: list[str]
    # gRPC address polled with grpc.health.v1; None for Envoy (polled on its admin /ready).
    health_address: str | None
    # How long a SIGTERM may take before SIGKILL: the service's drain grace plus some slack.
    stop_timeout_s: float
    # Start stage: every child of a stage starts together; the next stage waits until they are
    # healthy (the router probes the provider workers, the gateway dials the router and logger).
    stage: int
    # The service's TLS section: its health is polled over TLS / mTLS with the client side.
    health_tls: TlsSettings | None = None


# Slack beyond the grace period for cleanups (flushing the request log) after the drain.
STOP_SLACK_S = 5.0
ENVOY_STOP_TIMEOUT_S = 5.0


def _service(
    name: str,
    module_args: list[str],
    config: Path | None,
    host: str,
    port: int,
    grace_s: float,
    stage: int,
    tls: TlsSettings | None = None,
) -> ChildSpec:
    argv = [sys.executable, "-m", *module_args]
    if config is not None:
        argv += ["--config", str(config)]
    return ChildSpec(name, argv, dial_address(host, port), grace_s + STOP_SLACK_S, stage, tls)


def services(settings: MeshSettings, config: Path | None) -> list[ChildSpec]:
    """The Python services in start order (stage by stage)."""
    specs = [
        _service(
            "logger",
            ["hybridinference.logger"],
            config,
            settings.logger.host,
            settings.logger.port,
            settings.logger.grace_period_s,
            0,
            settings.logger.tls,
        )
    ]
    # A worker hosted in the router (colocated) has no process of its own.
    for worker in (w for w in settings.providers if not w.colocated):
        specs.append(
            _service(
                f"provider:{worker.name}",
                ["hybridinference.providers", "--worker", worker.name],
                config,
                worker.host,
                worker.port,
                worker.grace_period_s,
                0,
                worker.tls,
            )
        )
    if not settings.router.colocated:  # else it runs inside the gateway
        specs.append(
            _service(
                "router",
                ["hybridinference.router"],
                config,
                settings.router.host,
                settings.router.port,
                settings.router.grace_period_s,
                1,
                settings.router.tls,
            )
        )
    specs.append(
        _service(
            "gateway",
            ["hybridinference.gateway"],
            config,
            settings.gateway.host,
            settings.gateway.port,
            settings.gateway.grace_period_s,
            2,
            settings.gateway.tls,
        )
    )
    return specs


def envoy(settings: MeshSettings, envoy_binary: str, rendered: Path) -> ChildSpec:
    argv = [
        envoy_binary,
        "-c",
        str(rendered),
        "--concurrency",
        "1",
        "--base-id",
        str(settings.envoy.base_id),
        # Startup chatter at info level drowns the services' lines; access logs still print.
        "--log-level",
        "warning",
    ]
    return ChildSpec("envoy", argv, None, ENVOY_STOP_TIMEOUT_S, 3)


def stop_order(names: list[str]) -> list[str]:
    """Gateway first (it drains in-flight streams while Envoy still relays them), then the
    router, the provider workers and the logger (which flushes the gateway's last records), and
    Envoy last."""

    def rank(name: str) -> int:
        if name == "gateway":
            return 0
        if name == "router":
            return 1
        if name.startswith("provider:"):
            return 2
        if name == "logger":
            return 3
        return 4

    return sorted(names, key=rank)


def port_conflicts(settings: MeshSettings) -> list[str]:
    """Problems that would stop the mesh from starting, found before anything starts."""
    problems = []
    ports: dict[int, str] = {}
    listeners = [
        ("gateway", settings.gateway.port),
        *((("router", settings.router.port),) if not settings.router.colocated else ()),
        ("logger", settings.logger.port),
        ("envoy", settings.envoy.port),
        ("envoy admin", settings.envoy.admin_port),
        *((f"provider:{w.name}", w.port) for w in settings.providers if not w.colocated),
    ]
    for name, port in listeners:
        if port == 0:
            # Peers learn each other's addresses from the config, so ports must be fixed.
            problems.append(f"{name}: port 0 (any free port) cannot be used with the launcher")
        elif port in ports:
            problems.append(f"{name}: port {port} is also used by {ports[port]}")
        else:
            ports[port] = name
    return problems
