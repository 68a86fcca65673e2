"""The compose mesh's configs re-rendered for the test: every address on loopback, free ports.

With host networking the compose service names do not resolve and the fixed ports could be
taken on a shared machine, so the test's mesh config is deploy/config/compose.yaml with only its
hosts (127.0.0.1) and ports (free ones) replaced; Envoy's and Prometheus' configs are rendered
from it by the same code that renders the committed envoy.compose.yaml and
prometheus.compose.yml. The variables returned are what docker-compose.test.yml reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hybridinference.common.settings import MeshSettings
from hybridinference.render import envoy_variants, prometheus_config
from support.procs import REPO, free_port

COMPOSE_MESH = REPO / "deploy" / "config" / "compose.yaml"
LOOPBACK = "127.0.0.1"
# The API key secret of the test's mesh (auth is on in compose.yaml).
AUTH_SECRET = "compose-test-secret-" + "0" * 32
# What the compose file runs by default (the other workers are behind profiles).
RUNNING_WORKERS = ("sim",)


@dataclass(frozen=True)
class ComposeMesh:
    directory: Path
    settings: MeshSettings
    postgres_port: int
    alertmanager_port: int

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.envoy.port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.settings.envoy.port}"

    @property
    def prometheus(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.prometheus.port}"

    @property
    def database_url(self) -> str:
        return (
            f"postgresql://hybridinference:hybridinference@{LOOPBACK}:{self.postgres_port}"
            "/hybridinference"
        )

    def compose_env(self) -> dict[str, str]:
        settings = self.settings
        sim = settings.worker("sim")
        return {
            "HI_TEST_DIR": str(self.directory),
            "HI_TEST_GATEWAY_PORT": str(settings.gateway.port),
            "HI_TEST_ROUTER_PORT": str(settings.router.port),
            "HI_TEST_LOGGER_PORT": str(settings.logger.port),
            "HI_TEST_SIM_PORT": str(sim.port),
            "HI_TEST_ENVOY_ADMIN_PORT": str(settings.envoy.admin_port),
            "HI_TEST_POSTGRES_PORT": str(self.postgres_port),
            "HI_TEST_ALERTMANAGER_PORT": str(self.alertmanager_port),
            # Variables of deploy/docker-compose.yml itself; the secrets it requires first.
            "HI_AUTH_SECRET": AUTH_SECRET,
            "POSTGRES_PASSWORD": "hybridinference",
            "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana",
            "HI_HTTP_BIND": LOOPBACK,
            "HI_HTTP_PORT": str(settings.envoy.port),
            "PROMETHEUS_PORT": str(settings.prometheus.port),
        }


def _loopback(section: dict[str, Any], *port_keys: str) -> None:
    section["host"] = LOOPBACK
    for key in port_keys:
        section[key] = free_port()


def mesh_config() -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(COMPOSE_MESH.read_text()))
    for name in ("gateway", "router", "logger"):
        _loopback(config[name], "port", "metrics_port")
    for worker in config["providers"]:
        _loopback(worker, "port", "metrics_port")
    config["gateway"]["router_address"] = f"{LOOPBACK}:{free_port()}"
    _loopback(config["envoy"], "port", "admin_port")
    config["prometheus"] = {"host": LOOPBACK, "port": free_port(), "scrape_interval_s": 2}
    return config


def render(directory: Path) -> ComposeMesh:
    directory.mkdir(parents=True, exist_ok=True)
    mesh_path = directory / "mesh.yaml"
    mesh_path.write_text(yaml.safe_dump(mesh_config(), sort_keys=False))
    settings = envoy_variants.settings_from_file(mesh_path)
    # Envoy as in compose (envoy_variants' compose variant), on loopback addresses.
    scale = envoy_variants.ScaleOut(
        gateways=[envoy_variants.HostPort(LOOPBACK, settings.gateway.port)],
        router_listener=envoy_variants.HostPort.parse(settings.gateway.router_address),
        routers=[envoy_variants.HostPort(LOOPBACK, settings.router.port)],
    )
    envoy = envoy_variants.render(settings, scale, Path("/etc/envoy/hybridinference.pb"))
    (directory / "envoy.yaml").write_text(envoy_variants.dump(envoy, str(mesh_path)))
    alertmanager_port = free_port()
    # Prometheus scrapes what runs: the workers behind profiles are not started by the test.
    running = settings.model_copy(
        update={"providers": [w for w in settings.providers if w.name in RUNNING_WORKERS]}
    )
    prometheus = prometheus_config.render(
        running,
        rule_files=["/etc/prometheus/rules/*.yml"],
        alertmanager=f"{LOOPBACK}:{alertmanager_port}",
    )
    (directory / "prometheus.yml").write_text(yaml.safe_dump(prometheus, sort_keys=False))
    # Readable by the containers' unprivileged users (10001, nobody).
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return ComposeMesh(directory, settings, free_port(), alertmanager_port)
