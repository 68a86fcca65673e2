"""Prometheus config for deploy/docker-compose.yml, derived from the observability renderer.

deploy/prometheus/prometheus.yml scrapes the mesh `make up` runs (loopback). In compose, every
service is reached by its service name, and gateway and router may run as several replicas
(`--scale`), so this renders render.prometheus_config for deploy/config/compose.yaml and
only adapts what compose changes: replicated jobs discover every container through Docker's
DNS, Alertmanager is the `alertmanager` service, the rules are mounted at /etc/prometheus/rules,
and Envoy's job is dropped (its admin port stays on loopback inside its container, as the admin
interface can stop the proxy). `python -m hybridinference.render [--check]` writes (checks) it.
"""

from __future__ import annotations

from typing import Any

import yaml

from hybridinference.render import envoy_variants, prometheus_config

MESH_CONFIG = "deploy/config/compose.yaml"
TARGET = prometheus_config.REPO / "deploy" / "config" / "prometheus.compose.yml"
# Compose services that may run as several replicas: scraped through DNS (every A record).
REPLICATED = ("gateway", "router")


def render() -> dict[str, Any]:
    settings = envoy_variants.settings_from_file(prometheus_config.REPO / MESH_CONFIG)
    config = prometheus_config.render(
        settings,
        rule_files=["/etc/prometheus/rules/*.yml"],
        alertmanager=f"alertmanager:{prometheus_config.ALERTMANAGER_PORT}",
    )
    jobs: list[dict[str, Any]] = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "envoy":
            continue
        if job["job_name"] in REPLICATED:
            (static,) = job.pop("static_configs")
            (target,) = static["targets"]
            host, _, port = target.rpartition(":")
            job["dns_sd_configs"] = [{"names": [host], "type": "A", "port": int(port)}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def text() -> str:
    header = (
        f"# Prometheus for deploy/docker-compose.yml. GENERATED from {MESH_CONFIG} by\n"
        "# `python -m hybridinference.render` (render/prometheus_config.py with the\n"
        "# compose service names); edit those, never this file.\n"
    )
    return header + yaml.safe_dump(render(), sort_keys=False)
