"""Grafana dashboards: committed JSON is the generator's output, and every query names a metric
the mesh exports (or a recording rule), so a renamed metric cannot leave a silent empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import hybridinference.gateway.metrics
import hybridinference.logger.metrics
import hybridinference.providers.metrics
import hybridinference.router.metrics  # noqa: F401 - registers the router's metric families
from hybridinference.common import metrics as common_metrics
from hybridinference.render import grafana_dashboards

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
RULES = REPO / "deploy" / "prometheus" / "rules" / "hybridinference.yml"

# Series that exist only at scrape time (collectors) or come from other exporters.
SCRAPE_TIME = {
    "hi_router_endpoint_healthy",
    "hi_router_endpoint_in_flight",
    "hi_router_endpoint_attempts_total",
    "hi_router_endpoint_failures_total",
    "hi_router_endpoint_hedges_total",
    "hi_router_breaker_state",
    "hi_router_breaker_opened_total",
    "hi_router_endpoint_queue_waiting",
    "hi_router_endpoint_running",
    "hi_router_endpoint_kv_cache_usage_ratio",
    "hi_router_endpoint_ttft_ewma_seconds",
    "hi_provider_generations_running",
    "hi_provider_generations_total",
    "hi_logger_records_accepted_total",
    "hi_logger_records_rejected_total",
    "hi_logger_rows_written_total",
    "hi_logger_rows_duplicate_total",
    "hi_logger_db_write_failures_total",
    "hi_logger_spool_full_refusals_total",
    "hi_logger_spool_records",
    "hi_logger_spool_bytes",
    "hi_gateway_log_queue_records",
    "hi_gateway_log_spool_records",
    "hi_gateway_log_records_dropped_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _exported() -> set[str]:
    names = set(SCRAPE_TIME)
    for family in REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
        # A counter's family name drops "_total"; unlabelled-yet families have no samples.
        names.add(f"{family.name}_total")
        names.update(f"{family.name}{suffix}" for suffix in HISTOGRAM_SUFFIXES)
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def test_committed_dashboards_are_the_generated_ones() -> None:
    generator = grafana_dashboards
    for name, board in generator.DASHBOARDS.items():
        committed = (GRAFANA / "dashboards" / f"{name}.json").read_text()
        assert committed == generator.render(board), "run: python -m hybridinference.render"
    assert set(generator.DASHBOARDS) == {"overview", "providers", "routing", "logger"}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    assert common_metrics.RPC_HANDLED is not None
    exported = _exported()
    used: set[str] = set()
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                used.update(re.findall(r"\bhi[_:][a-z0-9_:]+", target["expr"]))
    unknown = {name for name in used if name not in exported}
    assert not unknown
    assert len(used) > 30


def test_dashboards_use_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert all(p["datasource"]["uid"] == uid for p in board["panels"])
