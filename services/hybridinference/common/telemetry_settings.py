"""Settings of observability: per-service /metrics ports, tracing, and the launcher's Prometheus.

Kept apart from ``settings.py`` (which embeds these sections) so the telemetry knobs live in one
readable place. Defaults: metrics on (gateway 9101, router 9102, first provider worker 9103,
logger 9104, further workers 9105, 9106, ...), tracing off, Prometheus started by ``make up``
when its binary is installed.
"""

from __future__ import annotations

from pydantic import Field

from hybridinference.common.settings_base import SettingsSection

GATEWAY_METRICS_PORT = 9101
ROUTER_METRICS_PORT = 9102
FIRST_WORKER_METRICS_PORT = 9103
LOGGER_METRICS_PORT = 9104


def default_worker_metrics_port(index: int) -> int:
    """9103 for the first provider worker, then 9105, 9106, ... (9104 is the logger's)."""
    return FIRST_WORKER_METRICS_PORT if index == 0 else LOGGER_METRICS_PORT + index


class TracingSettings(SettingsSection):
    """OpenTelemetry traces; off by default, and then no tracing code is even imported."""

    enabled: bool = False
    # OTLP/gRPC collector (an OpenTelemetry Collector, Jaeger, Tempo, ...).
    otlp_endpoint: str = "http://127.0.0.1:4317"
    # Share of new traces recorded; a sampled parent (traceparent) is always followed.
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class PrometheusSettings(SettingsSection):
    """The Prometheus that ``make up`` starts beside the mesh (when the binary is installed;
    the launcher's ``--prometheus`` flag decides, so test meshes never start one)."""

    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=1, le=65535)
    binary: str = "prometheus"
    scrape_interval_s: float = Field(default=5.0, gt=0)
    # Rule files loaded by that Prometheus (recording + alerting rules).
    rules_dir: str = "deploy/prometheus/rules"
