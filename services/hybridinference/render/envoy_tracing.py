"""Envoy's share of a request's trace: the OpenTelemetry tracer, added only when tracing is on.

The committed envoy.yaml has no tracing (off by default, and then Envoy does no tracing work).
With ``tracing.enabled`` the rendered config gets the HTTP connection manager's
``envoy.tracers.opentelemetry`` provider: Envoy starts a trace (or continues an incoming
``traceparent``), reports its ingress span as service "envoy" and forwards the W3C context to the
gateway, whose server spans then become its children. Spans go over OTLP/gRPC to the same
collector as the services', via a cluster of its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from hybridinference.common.telemetry_settings import TracingSettings

OTLP_CLUSTER = "otlp_collector"
SERVICE_NAME = "envoy"
_OTLP_DEFAULT_PORT = 4317
_TYPES = "type.googleapis.com/envoy.extensions"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def tracing_config(settings: TracingSettings) -> dict[str, Any]:
    """The HttpConnectionManager ``tracing`` block reporting to the OTLP cluster."""
    return {
        # Envoy is where most traces start, so it applies sample_ratio; the services' ParentBased
        # sampler then follows its decision (the sampled flag of the traceparent it forwards).
        "random_sampling": {"value": settings.sample_ratio * 100},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": SERVICE_NAME,
            },
        },
    }


def collector_cluster(settings: TracingSettings) -> dict[str, Any]:
    """A cluster for the OTLP/gRPC collector named by ``tracing.otlp_endpoint``."""
    url = urlsplit(settings.otlp_endpoint)
    if not url.hostname:
        raise ValueError(f"tracing.otlp_endpoint has no host: {settings.otlp_endpoint!r}")
    cluster: dict[str, Any] = {
        "name": OTLP_CLUSTER,
        # Resolves names (a compose service, say) and takes IP literals as they are.
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        # OTLP/gRPC needs HTTP/2.
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": f"{_TYPES}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": url.hostname,
                                        "port_value": url.port or _OTLP_DEFAULT_PORT,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if url.scheme == "https":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": f"{_TYPES}.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": url.hostname,
            },
        }
    return cluster


def add_tracing(
    config: dict[str, Any], hcms: list[dict[str, Any]], settings: TracingSettings
) -> None:
    """Adds the tracer to each connection manager and the collector cluster, when tracing is on."""
    if not settings.enabled:
        return
    for hcm in hcms:
        hcm["tracing"] = tracing_config(settings)
    clusters: list[dict[str, Any]] = config["static_resources"]["clusters"]
    clusters[:] = [c for c in clusters if c.get("name") != OTLP_CLUSTER]
    clusters.append(collector_cluster(settings))
