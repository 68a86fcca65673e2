# ruff: noqa: E501 - PromQL reads better on one line than split across string literals.
"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from compact definitions.

Run after changing a panel: ``python -m hybridinference.render``. A test checks that the
committed JSON is this module's output and that every query names a metric the mesh exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "hi-prometheus"}

# (title, unit, [(legend, expr)]); "stat" panels show one number.
Panel = tuple[str, str, list[tuple[str, str]]]


def _panel(index: int, panel: Panel, kind: str, width: int) -> dict[str, Any]:
    title, unit, queries = panel
    per_row = 24 // width
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {
            "h": 8 if kind == "timeseries" else 4,
            "w": width,
            "x": (index % per_row) * width,
            "y": (index // per_row) * 8,
        },
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for i, (legend, expr) in enumerate(queries)
        ],
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "refresh": 2,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    variables: list[dict[str, Any]],
    stats: list[Panel] | None = None,
) -> dict[str, Any]:
    built = [_panel(i, p, "stat", 6) for i, p in enumerate(stats or [])]
    offset = len(built)
    for i, p in enumerate(panels):
        item = _panel(i, p, "timeseries", 12)
        item["id"] = offset + i + 1
        item["gridPos"]["y"] += 4 if stats else 0
        built.append(item)
    return {
        "uid": uid,
        "title": title,
        "tags": ["hybridinference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": built,
    }


MODEL = _variable("model", "label_values(hi_gateway_requests_total, model)")
ENDPOINT = _variable("endpoint", "label_values(hi_router_endpoint_healthy, endpoint)")
M = 'model=~"$model"'
E = 'endpoint=~"$endpoint"'

OVERVIEW = dashboard(
    "hi-overview",
    "HybridInference / Overview",
    stats=[
        ("Requests/s", "reqps", [("", f"sum(rate(hi_gateway_requests_total{{{M}}}[5m]))")]),
        (
            "Server error ratio",
            "percentunit",
            [
                (
                    "",
                    f"sum(hi:gateway_server_errors:rate5m{{{M}}}) / sum(hi:gateway_requests:rate5m{{{M}}})",
                )
            ],
        ),
        ("TTFT p95", "s", [("", f"max(hi:gateway_ttft_seconds:p95_5m{{{M}}})")]),
        ("Services up", "short", [("", 'sum(up{job=~"gateway|router|providers|logger|envoy"})')]),
    ],
    panels=[
        (
            "Requests by model and status",
            "reqps",
            [
                (
                    "{{model}} {{code}}",
                    f"sum by (model, code) (rate(hi_gateway_requests_total{{{M}}}[5m]))",
                )
            ],
        ),
        (
            "Server error ratio by model",
            "percentunit",
            [("{{model}}", f"hi:gateway_error_ratio:rate5m{{{M}}}")],
        ),
        (
            "Time to first token p50 / p95",
            "s",
            [
                (
                    "p50 {{model}}",
                    f"histogram_quantile(0.5, sum by (model, le) (rate(hi_gateway_time_to_first_token_seconds_bucket{{{M}}}[5m])))",
                ),
                ("p95 {{model}}", f"hi:gateway_ttft_seconds:p95_5m{{{M}}}"),
            ],
        ),
        (
            "Time per output token p50",
            "s",
            [("{{model}}", f"hi:gateway_tpot_seconds:p50_5m{{{M}}}")],
        ),
        (
            "Request duration p95 by surface",
            "s",
            [
                (
                    "{{surface}}",
                    f"histogram_quantile(0.95, sum by (surface, le) (rate(hi_gateway_request_duration_seconds_bucket{{{M}}}[5m])))",
                )
            ],
        ),
        (
            "Tokens/s in and out",
            "short",
            [("{{model}} {{direction}}", f"hi:gateway_tokens:rate5m{{{M}}}")],
        ),
        (
            "Cost per hour (USD)",
            "currencyUSD",
            [("{{model}}", f"hi:gateway_cost_usd:rate1h{{{M}}}")],
        ),
        (
            "In-flight calls by service",
            "short",
            [
                (
                    "{{job}} {{grpc_method}}",
                    'sum by (job, grpc_method) (hi_grpc_server_requests_in_flight{grpc_service!~"grpc.health.*|grpc.reflection.*"})',
                )
            ],
        ),
        (
            "TTFT SLO burn rate (1h, 5m)",
            "short",
            [
                ("1h {{model}}", f"hi:ttft_slo_bad_ratio:rate1h{{{M}}} / 0.05"),
                ("5m {{model}}", f"hi:ttft_slo_bad_ratio:rate5m{{{M}}} / 0.05"),
            ],
        ),
        (
            "Envoy downstream requests by response class",
            "reqps",
            [
                (
                    "{{envoy_response_code_class}}xx",
                    'sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress"}[5m]))',
                )
            ],
        ),
    ],
    variables=[MODEL],
)

PROVIDERS = dashboard(
    "hi-providers",
    "HybridInference / Providers",
    panels=[
        (
            "Requests served by endpoint",
            "reqps",
            [
                (
                    "{{endpoint}}",
                    f'sum by (endpoint) (rate(hi_gateway_requests_total{{code="OK",{E}}}[5m]))',
                )
            ],
        ),
        (
            "TTFT p95 by endpoint",
            "s",
            [
                (
                    "{{endpoint}}",
                    f"histogram_quantile(0.95, sum by (endpoint, le) (rate(hi_gateway_time_to_first_token_seconds_bucket{{{E}}}[5m])))",
                )
            ],
        ),
        (
            "Time per output token p50 by endpoint",
            "s",
            [
                (
                    "{{endpoint}}",
                    f"histogram_quantile(0.5, sum by (endpoint, le) (rate(hi_gateway_time_per_output_token_seconds_bucket{{{E}}}[5m])))",
                )
            ],
        ),
        (
            "Generations running / queued",
            "short",
            [
                (
                    "running {{endpoint}}",
                    f"sum by (endpoint) (hi_provider_generations_running{{{E}}})",
                ),
                (
                    "waiting {{endpoint}}",
                    f"sum by (endpoint) (hi_router_endpoint_queue_waiting{{{E}}})",
                ),
            ],
        ),
        (
            "Generation outcomes",
            "ops",
            [
                (
                    "{{endpoint}} {{outcome}}",
                    f"sum by (endpoint, outcome) (rate(hi_provider_generations_total{{{E}}}[5m]))",
                )
            ],
        ),
        (
            "Failures per attempt",
            "percentunit",
            [
                (
                    "{{endpoint}}",
                    f"sum by (endpoint) (rate(hi_router_endpoint_failures_total{{{E}}}[5m])) / sum by (endpoint) (rate(hi_router_endpoint_attempts_total{{{E}}}[5m]))",
                )
            ],
        ),
        (
            "Tokens/s by endpoint",
            "short",
            [
                (
                    "{{endpoint}} {{direction}}",
                    f"sum by (endpoint, direction) (rate(hi_gateway_tokens_total{{{E}}}[5m]))",
                )
            ],
        ),
        (
            "KV-cache use",
            "percentunit",
            [("{{endpoint}}", f"hi_router_endpoint_kv_cache_usage_ratio{{{E}}}")],
        ),
    ],
    variables=[ENDPOINT],
)

ROUTING = dashboard(
    "hi-routing",
    "HybridInference / Routing",
    panels=[
        (
            "Routed by model and endpoint",
            "reqps",
            [
                (
                    "{{model}} → {{endpoint}}",
                    f"sum by (model, endpoint) (rate(hi_router_routed_total{{{M}}}[5m]))",
                )
            ],
        ),
        (
            "Retries, fallbacks, hedges",
            "ops",
            [
                ("retries {{model}}", f"sum by (model) (rate(hi_router_retries_total{{{M}}}[5m]))"),
                (
                    "fallbacks {{model}}",
                    f"sum by (model) (rate(hi_router_fallbacks_total{{{M}}}[5m]))",
                ),
                (
                    "hedges {{endpoint}}",
                    "sum by (endpoint) (rate(hi_router_endpoint_hedges_total[5m]))",
                ),
            ],
        ),
        (
            "Breaker state (1 = open)",
            "short",
            [
                ("{{endpoint}}", 'hi_router_breaker_state{state="open"}'),
                ("half-open {{endpoint}}", 'hi_router_breaker_state{state="half_open"}'),
            ],
        ),
        (
            "Breaker openings",
            "short",
            [("{{endpoint}}", "increase(hi_router_breaker_opened_total[15m])")],
        ),
        (
            "Endpoint health (1 = healthy)",
            "short",
            [("{{endpoint}}", "hi_router_endpoint_healthy")],
        ),
        ("In flight per endpoint", "short", [("{{endpoint}}", "hi_router_endpoint_in_flight")]),
        (
            "TTFT moving average per endpoint",
            "s",
            [("{{endpoint}}", "hi_router_endpoint_ttft_ewma_seconds")],
        ),
        (
            "Router call duration p95",
            "s",
            [
                (
                    "{{grpc_method}}",
                    'histogram_quantile(0.95, sum by (grpc_method, le) (rate(hi_grpc_server_handling_seconds_bucket{job="router"}[5m])))',
                )
            ],
        ),
    ],
    variables=[MODEL],
)

LOGGER = dashboard(
    "hi-logger",
    "HybridInference / Request log",
    stats=[
        ("Database connected", "short", [("", "min(hi_logger_db_connected)")]),
        ("Logger spool records", "short", [("", "sum(hi_logger_spool_records)")]),
        ("Gateway spool records", "short", [("", "sum(hi_gateway_log_spool_records)")]),
        (
            "Dropped records (1h)",
            "short",
            [("", "sum(increase(hi_gateway_log_records_dropped_total[1h]))")],
        ),
    ],
    panels=[
        (
            "Records accepted / rows written",
            "ops",
            [
                ("accepted", "sum(rate(hi_logger_records_accepted_total[5m]))"),
                ("written", "sum(rate(hi_logger_rows_written_total[5m]))"),
                ("duplicates", "sum(rate(hi_logger_rows_duplicate_total[5m]))"),
            ],
        ),
        (
            "Rejected records by reason",
            "ops",
            [("{{reason}}", "sum by (reason) (rate(hi_logger_records_rejected_total[5m]))")],
        ),
        (
            "Database write latency p50 / p99",
            "s",
            [
                (
                    "p50",
                    "histogram_quantile(0.5, sum by (le) (rate(hi_logger_db_write_seconds_bucket[5m])))",
                ),
                (
                    "p99",
                    "histogram_quantile(0.99, sum by (le) (rate(hi_logger_db_write_seconds_bucket[5m])))",
                ),
            ],
        ),
        (
            "Spool backlog",
            "short",
            [
                ("logger records", "sum(hi_logger_spool_records)"),
                ("gateway records", "sum(hi_gateway_log_spool_records)"),
            ],
        ),
        ("Spool bytes", "bytes", [("logger", "sum(hi_logger_spool_bytes)")]),
        (
            "Write failures and full-spool refusals",
            "ops",
            [
                ("write failures", "sum(rate(hi_logger_db_write_failures_total[5m]))"),
                ("spool full", "sum(rate(hi_logger_spool_full_refusals_total[5m]))"),
            ],
        ),
        ("Gateway record queue", "short", [("{{instance}}", "hi_gateway_log_queue_records")]),
        (
            "Logger memory",
            "bytes",
            [("{{instance}}", 'process_resident_memory_bytes{job="logger"}')],
        ),
    ],
    variables=[],
)

DASHBOARDS = {"overview": OVERVIEW, "providers": PROVIDERS, "routing": ROUTING, "logger": LOGGER}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"
