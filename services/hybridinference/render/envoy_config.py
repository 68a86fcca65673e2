"""Renders deploy/envoy/envoy.yaml for the mesh settings in use.

The committed file is the single source of the Envoy config (valid as is for the default ports).
Rendering loads it and replaces only what depends on the settings: the listener address, the admin
port, the edge's request timeouts and overload limits, the body limit (from gateway.max_body_bytes),
the gateway's and the listener's own address (edge_loopback) and an absolute descriptor path, so
Envoy works from any directory; with tracing on it also adds Envoy's OpenTelemetry tracer
(hybridinference/render/envoy_tracing.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hybridinference.common.settings import MeshSettings, dial_host
from hybridinference.render.envoy_introspection import restrict_introspection
from hybridinference.render.envoy_tracing import add_tracing

REPO = Path(__file__).resolve().parents[3]
TEMPLATE = REPO / "deploy" / "envoy" / "envoy.yaml"
DESCRIPTOR = REPO / "deploy" / "envoy" / "hybridinference.pb"

_HCM = "envoy.filters.network.http_connection_manager"
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_HEAP_MONITOR = "envoy.resource_monitors.fixed_heap"
_CONNECTIONS_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
GATEWAY_CLUSTER = "gateway"
# Envoy's own ingress listener, for the one request it refuses on a second pass (gRPC over HTTP/1).
LOOPBACK_CLUSTER = "edge_loopback"
_BODY_HEADROOM = 1 << 20
_MIN_ENVOY_BODY = 2 << 20


def _socket(address: dict[str, Any]) -> dict[str, Any]:
    socket: dict[str, Any] = address["socket_address"]
    return socket


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise ValueError(f"envoy config: no {what} named {name!r}")


class _Expanded(yaml.SafeDumper):
    """Writes each value where it is used: the template shares route parts through YAML anchors,
    but a rendered config is read by people debugging a deployment, without `*id001` aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(config: dict[str, Any]) -> str:
    """A rendered config as YAML text (anchors expanded)."""
    return yaml.dump(config, Dumper=_Expanded, sort_keys=False)


def _duration(seconds: float) -> str:
    """Seconds as a protobuf JSON duration, in milliseconds at most ("10s", "0.25s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


_LUA_BODY_LIMIT = re.compile(r"^(\s*local MAX_BODY_BYTES = )\d+$", re.M)


def _set_lua_body_limit(hcm: dict[str, Any], limit: int) -> None:
    """The edge policy refuses a Content-Length above the limit before reading the body; it
    must agree with the transcoder's limit."""
    for item in hcm["http_filters"]:
        source = item.get("typed_config", {}).get("default_source_code", {})
        code = source.get("inline_string")
        if isinstance(code, str) and _LUA_BODY_LIMIT.search(code):
            source["inline_string"] = _LUA_BODY_LIMIT.sub(rf"\g<1>{limit}", code)


def apply_settings(
    config: dict[str, Any], settings: MeshSettings, descriptor: Path = DESCRIPTOR
) -> dict[str, Any]:
    """Sets the settings-dependent values in a loaded config, in place, and returns it."""
    # The admin address stays on loopback whatever the listener binds: it can stop the proxy.
    _socket(config["admin"]["address"])["port_value"] = settings.envoy.admin_port
    resources = config["static_resources"]
    listeners: list[dict[str, Any]] = resources["listeners"]
    if len(listeners) != 1:
        raise ValueError("envoy config: expected exactly one listener")
    listener = listeners[0]
    _socket(listener["address"]).update(address=settings.envoy.host, port_value=settings.envoy.port)
    # Envoy's body limit follows the gateway's (plus headroom), so the gateway's limit, with its
    # 413 naming gateway.max_body_bytes, is what clients meet, and base64 images fit.
    body_limit = max(settings.gateway.max_body_bytes + _BODY_HEADROOM, _MIN_ENVOY_BODY)
    listener["per_connection_buffer_limit_bytes"] = body_limit
    hcms: list[dict[str, Any]] = []
    for chain in listener["filter_chains"]:
        hcm = _named(chain["filters"], _HCM, "network filter")["typed_config"]
        hcms.append(hcm)
        hcm["request_headers_timeout"] = _duration(settings.envoy.request_headers_timeout_s)
        hcm["request_timeout"] = _duration(settings.envoy.request_timeout_s)
        transcoder = _named(hcm["http_filters"], _TRANSCODER, "http filter")["typed_config"]
        transcoder["proto_descriptor"] = str(descriptor.resolve())
        transcoder["max_request_body_size"] = body_limit
        _set_lua_body_limit(hcm, body_limit)

    loopback = _named(resources["clusters"], LOOPBACK_CLUSTER, "cluster")
    for group in loopback["load_assignment"]["endpoints"]:
        for endpoint in group["lb_endpoints"]:
            _socket(endpoint["endpoint"]["address"]).update(
                address=dial_host(settings.envoy.host), port_value=settings.envoy.port
            )
    cluster = _named(resources["clusters"], GATEWAY_CLUSTER, "cluster")
    gateway = settings.gateway
    for group in cluster["load_assignment"]["endpoints"]:
        for endpoint in group["lb_endpoints"]:
            _socket(endpoint["endpoint"]["address"]).update(
                address=dial_host(gateway.host), port_value=gateway.port
            )
    _apply_overload_limits(config, settings)
    # Health and reflection on the public port: off with auth on unless enabled.
    restrict_introspection(hcms, settings)
    add_tracing(config, hcms, settings.tracing)
    return config


def _apply_overload_limits(config: dict[str, Any], settings: MeshSettings) -> None:
    monitors = config["overload_manager"]["resource_monitors"]
    heap = _named(monitors, _HEAP_MONITOR, "resource monitor")["typed_config"]
    heap["max_heap_size_bytes"] = settings.envoy.max_heap_mb * 1024 * 1024
    connections = _named(monitors, _CONNECTIONS_MONITOR, "resource monitor")["typed_config"]
    connections["max_active_downstream_connections"] = settings.envoy.max_connections


def render(
    settings: MeshSettings, run_dir: Path, template: Path = TEMPLATE, descriptor: Path = DESCRIPTOR
) -> Path:
    """Writes the config for ``settings`` to ``run_dir/envoy.yaml`` and returns its path."""
    config = yaml.safe_load(template.read_text())
    apply_settings(config, settings, descriptor)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "envoy.yaml"
    header = f"# Rendered by hybridinference.launcher from {template}; edit that file instead.\n"
    target.write_text(header + dump(config))
    return target
