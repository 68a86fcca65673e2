"""Envoy configs for deployments, derived from deploy/envoy/envoy.yaml by code, never by hand.

``make up`` renders the template for one gateway on loopback (envoy_config.apply_settings).
Deployments need the same front proxy with more upstreams: several gateway replicas, and an
internal listener that spreads the gateways' streams over several router replicas, each replica
actively health-checked with grpc.health.v1. This module applies the mesh settings exactly as the
launcher does and then only adds that scale-out part, so the routes, filters, transcoder and
limits are the ones `make up` uses. The committed variants (VARIANTS) are rewritten and checked
for drift with every other derived file by `python -m hybridinference.render [--check]`; a host
renders its own (systemd's ExecStartPre) with

    python -m hybridinference.render.envoy_variants --render OUT --config MESH \\
        --gateway 127.0.0.1:50051 --gateway 127.0.0.1:50061 \\
        --router-listener 127.0.0.1:50060 --router 127.0.0.1:50052 --router 127.0.0.1:50062
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridinference.common.settings import MeshSettings, dial_host, load_settings
from hybridinference.render import envoy_config

ENVOY_DIR = envoy_config.TEMPLATE.parent
_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_CLUSTER = "router"


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def socket(self) -> dict[str, Any]:
        return {"socket_address": {"address": self.host, "port_value": self.port}}


@dataclass(frozen=True)
class ScaleOut:
    """Where the replicas are. A DNS name resolving to several addresses (a compose service
    scaled with `--scale`) counts as all of them: such clusters re-resolve it periodically."""

    gateways: Sequence[HostPort]
    # Where the gateways reach the routers through Envoy; None keeps gateway → router direct.
    router_listener: HostPort | None = None
    routers: Sequence[HostPort] = field(default_factory=tuple)
    # Active gRPC health check: a replica is out after `unhealthy_threshold` failed checks (or at
    # once when it answers NOT_SERVING while draining) and back after one good one.
    interval_s: float = 2.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _health_checks(scale: ScaleOut) -> list[dict[str, Any]]:
    interval = _duration(scale.interval_s)
    return [
        {
            "timeout": _duration(scale.timeout_s),
            "interval": interval,
            # Envoy checks idle clusters only once a minute by default; a replica that died
            # while no traffic flowed would otherwise get the next request.
            "no_traffic_interval": interval,
            "unhealthy_threshold": scale.unhealthy_threshold,
            "healthy_threshold": 1,
            # grpc.health.v1 Check with service "" (the whole server); every service serves it
            # and turns NOT_SERVING when it starts draining.
            "grpc_health_check": {},
        }
    ]


# Connection failures never reached a replica, so retrying them elsewhere is always safe; a
# request that reached one is never retried (it may have produced tokens).
_RETRY_POLICY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,reset-before-request",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    # LEAST_REQUEST samples two hosts with replacement, so between idle replicas each pick may
    # land on the dead one again: enough re-picks that a retry practically always goes elsewhere
    # (with 3, a test request failed once after one of two routers was killed).
    "host_selection_retry_max_attempts": 10,
}


def _replicated(cluster: dict[str, Any], replicas: Sequence[HostPort], scale: ScaleOut) -> None:
    """Turns ``cluster`` (in place) into a health-checked cluster of ``replicas``."""
    if not replicas:
        raise ValueError(f"cluster {cluster['name']!r}: at least one replica is needed")
    # STATIC needs IP addresses; names (compose services, hosts in DNS) need a DNS cluster,
    # which adds one endpoint per resolved address.
    static = all(_is_ip(r.host) for r in replicas)
    cluster["type"] = "STATIC" if static else "STRICT_DNS"
    if not static:
        # Re-resolve often: replicas come and go (`--scale`), and a name that does not resolve
        # yet at start (its container is still starting) should not leave a long gap.
        cluster["dns_refresh_rate"] = "2s"
    cluster["lb_policy"] = "LEAST_REQUEST"
    cluster["load_assignment"] = {
        "cluster_name": cluster["name"],
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": r.socket()}} for r in replicas]}],
    }
    cluster["health_checks"] = _health_checks(scale)
    # The default panic threshold (50%) sends traffic to dead replicas once half are down;
    # a clean 503 "no healthy upstream" is better than connection errors.
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0.0}}


def _ingress_hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == _HCM:
                hcm: dict[str, Any] = network_filter["typed_config"]
                return hcm
    raise ValueError("envoy config: no http_connection_manager on the ingress listener")


def _router_listener(config: dict[str, Any], at: HostPort) -> dict[str, Any]:
    """A plain gRPC (h2c) listener in front of the router cluster, with the ingress timeouts."""
    ingress = _ingress_hcm(config)
    router_filter = copy.deepcopy(ingress["http_filters"][-1])
    if router_filter["name"] != "envoy.filters.http.router":
        raise ValueError("envoy config: the last ingress http filter is not the router")
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "router",
        "codec_type": "HTTP2",
        "stream_idle_timeout": ingress["stream_idle_timeout"],
        "request_timeout": ingress["request_timeout"],
        "http2_protocol_options": copy.deepcopy(ingress["http2_protocol_options"]),
        "route_config": {
            "name": ROUTER_CLUSTER,
            "virtual_hosts": [
                {
                    "name": ROUTER_CLUSTER,
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": ROUTER_CLUSTER,
                                # Streams last as long as generation; the gateway sets deadlines.
                                "timeout": "0s",
                                "retry_policy": copy.deepcopy(_RETRY_POLICY),
                            },
                        }
                    ],
                }
            ],
        },
        "http_filters": [router_filter],
    }
    return {
        "name": ROUTER_CLUSTER,
        "address": at.socket(),
        "filter_chains": [{"filters": [{"name": _HCM, "typed_config": hcm}]}],
    }


def scale_out(config: dict[str, Any], scale: ScaleOut) -> dict[str, Any]:
    """Adds replicas, health checks and retries to a config already rendered by
    envoy_config.apply_settings (in place), and returns it."""
    resources = config["static_resources"]
    gateway = next(
        (c for c in resources["clusters"] if c["name"] == envoy_config.GATEWAY_CLUSTER), None
    )
    if gateway is None:
        raise ValueError(f"envoy config: no cluster named {envoy_config.GATEWAY_CLUSTER!r}")
    _replicated(gateway, scale.gateways, scale)
    for vhost in _ingress_hcm(config)["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            if "route" in route:  # direct_response routes (the edge policy) have no upstream
                route["route"]["retry_policy"] = copy.deepcopy(_RETRY_POLICY)
    if scale.router_listener is not None:
        router = copy.deepcopy(gateway)
        router["name"] = ROUTER_CLUSTER
        _replicated(router, scale.routers, scale)
        resources["clusters"].append(router)
        resources["listeners"].append(_router_listener(config, scale.router_listener))
    elif scale.routers:
        raise ValueError("routers given without a router listener for the gateways to dial")
    return config


def render(settings: MeshSettings, scale: ScaleOut, descriptor: Path) -> dict[str, Any]:
    """The template with ``settings`` applied (as `make up` does) and scaled out."""
    config = yaml.safe_load(envoy_config.TEMPLATE.read_text())
    envoy_config.apply_settings(config, settings, descriptor)
    return scale_out(config, scale)


def dump(config: dict[str, Any], source: str) -> str:
    header = (
        f"# GENERATED from deploy/envoy/envoy.yaml and {source} by\n"
        "# `python -m hybridinference.render`; edit those, never this file.\n"
    )
    return header + envoy_config.dump(config)


@dataclass(frozen=True)
class Variant:
    """A committed, derived config: its file, the mesh config it is for, and its replicas."""

    filename: str
    mesh_config: str  # relative to the repository root
    scale: Callable[[MeshSettings], ScaleOut]
    # Where the descriptor set is on the machine or container that runs this Envoy.
    descriptor: str

    def settings(self) -> MeshSettings:
        return settings_from_file(envoy_config.REPO / self.mesh_config)

    def text(self) -> str:
        settings = self.settings()
        config = render(settings, self.scale(settings), Path(self.descriptor))
        return dump(config, self.mesh_config)


def settings_from_file(path: Path) -> MeshSettings:
    # The file alone: HI__ variables of the machine that generates must not leak into the output.
    saved = {k: v for k, v in os.environ.items() if k.startswith("HI__") or k == "HI_CONFIG"}
    for key in saved:
        del os.environ[key]
    try:
        return load_settings(str(path))
    finally:
        os.environ.pop("HI_CONFIG", None)
        os.environ.update(saved)


def _compose_scale(settings: MeshSettings) -> ScaleOut:
    # Replicas are compose services (`docker-compose up --scale gateway=3`): Envoy's DNS cluster
    # finds every container behind the service name. The gateways reach the routers through
    # Envoy's internal listener, at the port their router_address names.
    return ScaleOut(
        gateways=[HostPort(settings.gateway.host, settings.gateway.port)],
        router_listener=HostPort("0.0.0.0", HostPort.parse(settings.gateway.router_address).port),
        routers=[HostPort(settings.router.host, settings.router.port)],
    )


def _front_host_scale(settings: MeshSettings) -> ScaleOut:
    # The multi-host example's front host: two gateway and two router replicas on loopback
    # (systemd template units, instance = port), the second of each 10 ports above the first.
    gateway, router = settings.gateway, settings.router
    return ScaleOut(
        gateways=[HostPort(gateway.host, gateway.port), HostPort(gateway.host, gateway.port + 10)],
        router_listener=HostPort.parse(gateway.router_address),
        routers=[HostPort(router.host, router.port), HostPort(router.host, router.port + 10)],
    )


VARIANTS: tuple[Variant, ...] = (
    # The descriptor set is mounted next to the config in the official Envoy image.
    Variant(
        "envoy.compose.yaml",
        "deploy/config/compose.yaml",
        _compose_scale,
        "/etc/envoy/hybridinference.pb",
    ),
    # Installed under /opt/hybridinference on the front host (deploy/multihost/README.md).
    Variant(
        "envoy.scaleout.yaml",
        "deploy/multihost/mesh.yaml",
        _front_host_scale,
        "/opt/hybridinference/deploy/envoy/hybridinference.pb",
    ),
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hybridinference.render.envoy_variants",
        description="Render a scale-out Envoy config from deploy/envoy/envoy.yaml for a host.",
    )
    parser.add_argument(
        "--render", metavar="OUT", required=True, help="write one config for the given replicas"
    )
    parser.add_argument("--config", help="mesh YAML (default: $HI_CONFIG or built-in)")
    parser.add_argument("--gateway", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--router-listener", metavar="HOST:PORT")
    parser.add_argument("--router", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument(
        "--descriptor", default=str(envoy_config.DESCRIPTOR), help="descriptor set path"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = load_settings(args.config)
    gateways = [HostPort.parse(g) for g in args.gateway] or [
        HostPort(dial_host(settings.gateway.host), settings.gateway.port)
    ]
    scale = ScaleOut(
        gateways=gateways,
        router_listener=(HostPort.parse(args.router_listener) if args.router_listener else None),
        routers=[HostPort.parse(r) for r in args.router],
    )
    config = render(settings, scale, Path(args.descriptor))
    out = Path(args.render)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump(config, args.config or "the built-in settings"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
