"""deploy/docker-compose.yml: valid for docker-compose, consistent with the image and mesh config.

No Docker engine runs here, so nothing is pulled or built. What is checked for real:
`docker-compose config` accepts the file (bare and with .env.example); each HybridInference
service's command is run through the image's entry point script with the compose mesh config
and must come up serving grpc.health.v1; health checks probe the port the config gives the
service; only Envoy (and Grafana/Prometheus on loopback) publish ports; Envoy runs the config
derived from deploy/envoy/envoy.yaml and it has not drifted; every Envoy config in deploy/
passes `envoy --mode validate`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from hybridinference.common.settings import MeshSettings, load_settings
from hybridinference.render import envoy_variants
from support.procs import REPO, wait_healthy
from tests.integration.test_envoy_config import validate

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
MESH = DEPLOY / "config" / "compose.yaml"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.py"


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI (.ci/run installs it)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return found


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hi_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


IMAGE_SERVICES = {
    "gateway", "router", "logger", "provider-sim", "provider-vllm", "provider-openai",
    "provider-gemini",
}  # fmt: skip


def _image_services() -> dict[str, dict[str, Any]]:
    """The services that run the HybridInference image (built from ../Dockerfile)."""
    services = {name: svc for name, svc in _raw()["services"].items() if "build" in svc}
    assert set(services) == IMAGE_SERVICES
    for svc in services.values():
        assert svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert "hybridinference" in svc["image"]
    return services


def _mesh() -> MeshSettings:
    settings = load_settings(str(MESH))
    os.environ.pop("HI_CONFIG", None)
    return settings


def _service_port(settings: MeshSettings, command: list[str]) -> int:
    kind = command[0]
    if kind == "provider":
        return settings.worker(command[command.index("--worker") + 1]).port
    section = {"gateway": settings.gateway, "router": settings.router, "logger": settings.logger}
    return section[kind].port


# The secrets compose refuses to start without (no default password anywhere).
SECRETS = {
    "HI_AUTH_SECRET": "0123456789abcdef" * 4,
    "POSTGRES_PASSWORD": "pg-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


def _compose_config(env_file: Path | None) -> subprocess.CompletedProcess[str]:
    argv = [_docker_compose(), "-f", str(COMPOSE)]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    # Only the env file speaks: none of these may leak in from the test's environment.
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [*argv, "config"], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize("env_file", [None, ENV_EXAMPLE], ids=["defaults", "env-example"])
def test_compose_refuses_to_start_without_its_secrets(env_file: Path | None) -> None:
    result = _compose_config(env_file)
    assert result.returncode != 0
    # docker-compose names the first missing variable it meets, with our message.
    assert re.search(r"(HI_AUTH_SECRET|POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD)", result.stderr)
    assert "deploy/.env" in result.stderr, result.stderr


@pytest.mark.parametrize("env_file", [None, ENV_EXAMPLE], ids=["defaults", "env-example"])
def test_compose_config_passes(env_file: Path | None, tmp_path: Path) -> None:
    # The example (or no file) plus the secrets an operator must set.
    filled = tmp_path / ".env"
    base = env_file.read_text() if env_file is not None else ""
    filled.write_text(base + "".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    result = _compose_config(filled)
    assert result.returncode == 0, result.stderr
    normalized = yaml.safe_load(result.stdout)
    assert set(normalized["services"]) >= {
        "envoy", "gateway", "router", "logger", "provider-sim", "provider-vllm",
        "provider-openai", "provider-gemini", "postgres", "prometheus", "grafana", "alertmanager",
    }  # fmt: skip
    # Every depends_on waits for a condition on a service that can report it.
    for name, svc in normalized["services"].items():
        for dep, condition in svc.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in normalized["services"][dep], (name, dep)
    services = normalized["services"]
    dsn = services["logger"]["environment"]["HI__LOGGER__DATABASE_URL"]
    assert "pg-secret@postgres:5432" in dsn
    # The gateways hold the key table: the same database, and the secret keys are hashed with.
    gateway_env = services["gateway"]["environment"]
    assert gateway_env["HI__LOGGER__DATABASE_URL"] == dsn
    assert gateway_env["HI_AUTH_SECRET"] == SECRETS["HI_AUTH_SECRET"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-secret"
    # Envoy listens on loopback unless the operator opts in.
    # (this docker-compose prints the short "HOST_IP:PUBLISHED:TARGET" form)
    published = services["envoy"]["ports"][0]
    assert str(published).startswith("127.0.0.1:"), published


def test_compose_mesh_has_auth_on() -> None:
    settings = _mesh()
    assert settings.gateway.auth.enabled
    assert settings.envoy.public_introspection is None  # so: not public with auth on


def test_env_example_documents_every_variable() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used - documented == set()
    assert "COMPOSE_PROFILES" in documented


def test_every_service_of_the_image_is_an_entry_point_with_a_module() -> None:
    services = _entrypoint().SERVICES
    for name, svc in _image_services().items():
        command = svc["command"]
        assert command[0] in services, f"{name}: {command[0]!r} is not an entry point"
        module = services[command[0]]
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (name, module)
        assert svc["init"] is True, name


def test_health_checks_probe_the_configured_port() -> None:
    settings = _mesh()
    for name, svc in _image_services().items():
        port = _service_port(settings, svc["command"])
        assert svc["healthcheck"]["test"] == [
            "CMD", "hybridinference-service", "healthcheck", f"127.0.0.1:{port}"
        ], name  # fmt: skip
        assert str(port) in svc["expose"], name
        # Peers dial the compose service name the config gives; the container binds 0.0.0.0.
        assert svc["command"][-2:] == ["--host", "0.0.0.0"], name
    workers = {w.name: w for w in settings.providers}
    for worker in workers.values():
        assert worker.host == f"provider-{worker.name}"
        assert f"provider-{worker.name}" in _image_services()
    assert settings.gateway.host == "gateway" and settings.router.host == "router"
    assert settings.logger.host == "logger"


def test_nothing_publishes_beyond_loopback_by_default() -> None:
    for name, svc in _raw()["services"].items():
        for published in svc.get("ports", []):
            if name == "envoy":
                # Envoy's bind address is the operator's opt-in, loopback by default.
                assert str(published).startswith("${HI_HTTP_BIND:-127.0.0.1}:"), published
                continue
            assert str(published).startswith("127.0.0.1:"), (name, published)
    for name in IMAGE_SERVICES:
        assert "ports" not in _raw()["services"][name], name


def test_compose_runs_the_envoy_config_derived_from_the_one_make_up_uses() -> None:
    envoy = _raw()["services"]["envoy"]
    assert envoy["image"].startswith("${ENVOY_IMAGE:-envoyproxy/envoy:v")
    assert "./envoy/envoy.compose.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    assert "./envoy/hybridinference.pb:/etc/envoy/hybridinference.pb:ro" in envoy["volumes"]
    variant = next(v for v in envoy_variants.VARIANTS if v.filename == "envoy.compose.yaml")
    assert variant.mesh_config == "deploy/config/compose.yaml"
    assert variant.descriptor == "/etc/envoy/hybridinference.pb"
    # The gateways reach the routers through Envoy's internal listener.
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy.compose.yaml").read_text())
    router_listener = next(
        item for item in config["static_resources"]["listeners"] if item["name"] == "router"
    )
    port = router_listener["address"]["socket_address"]["port_value"]
    assert _mesh().gateway.router_address == f"envoy:{port}"


def test_derived_envoy_configs_have_not_drifted() -> None:
    """Regenerating from deploy/envoy/envoy.yaml and the mesh configs gives the committed files;
    when this fails, run `python -m hybridinference.render` and commit."""
    result = subprocess.run(
        [sys.executable, "-m", "hybridinference.render", "--check", "envoy"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _envoy_configs() -> list[Path]:
    return sorted(
        path
        for path in DEPLOY.rglob("*.yaml")
        if "static_resources" in (yaml.safe_load(path.read_text()) or {})
    )


def test_every_envoy_config_in_deploy_is_found() -> None:
    names = {path.name for path in _envoy_configs()}
    assert {"envoy.yaml", "envoy.compose.yaml", "envoy.scaleout.yaml"} <= names


@pytest.mark.parametrize("path", _envoy_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_envoy_config_in_deploy_validates(path: Path, tmp_path: Path) -> None:
    # Configs for a container or an install prefix name the descriptor where it is there; the
    # same file is here, so only that path changes for validation.
    text = path.read_text()
    local = str(DEPLOY / "envoy" / "hybridinference.pb")
    for elsewhere in ("/etc/envoy/hybridinference.pb",
                      "/opt/hybridinference/deploy/envoy/hybridinference.pb"):  # fmt: skip
        text = text.replace(elsewhere, local)
    checked = tmp_path / path.name
    checked.write_text(text)
    result = validate(checked)
    assert result.returncode == 0, result.stdout + result.stderr


def _listening_port(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("port") and "listening" in str(entry):
            return int(entry["port"])
    return None


# Seven Python services start at once; on two busy cores imports alone take seconds each.
@pytest.mark.timeout(240)
def test_each_image_service_starts_through_the_entry_point(tmp_path: Path) -> None:
    """Runs every compose command of the image (as the container would: entry point, the
    compose mesh config, the service's compose environment) on a free port, until it serves."""
    raw = yaml.safe_load(MESH.read_text())
    # Only the metrics ports change: several of these run at once here, next to other tests.
    for section in (raw["gateway"], raw["router"], raw["logger"], *raw["providers"]):
        if "metrics_port" in type(_mesh().gateway).model_fields:
            section["metrics_port"] = 0
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(yaml.safe_dump(raw))
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for name, svc in _image_services().items():
            # Compose's own interpolation with the defaults (as with no deploy/.env).
            env = {
                k: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(v))
                for k, v in svc.get("environment", {}).items()
            }
            # Required variables (${VAR:?message}) as an operator's .env would set them.
            env = {
                k: re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", lambda m: SECRETS.get(m.group(1), "x"), v)
                for k, v in env.items()
            }
            # "postgres" resolves only inside compose (where the logger starts once PostgreSQL
            # is healthy); here the logger keeps its SQLite default.
            env.pop("HI__LOGGER__DATABASE_URL", None)
            # The cloud workers refuse to start without their key (as in compose, where .env
            # must set it when the profile is on); no upstream is called here.
            env.update({k: "sk-test" for k, v in env.items() if k.endswith("_API_KEY") and not v})
            env = {**os.environ, **env, "HI_CONFIG": str(mesh), "PYTHONUNBUFFERED": "1"}
            log = tmp_path / f"{name}.log"
            workdir = tmp_path / name
            workdir.mkdir()
            with log.open("wb") as out:
                procs[name] = (
                    subprocess.Popen(
                        [sys.executable, str(ENTRYPOINT), *svc["command"], "--port", "0"],
                        cwd=workdir,
                        env={**env, "PYTHONPATH": str(REPO / "services")},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
        deadline = time.monotonic() + 150
        for name, (proc, log) in procs.items():
            port = None
            while port is None:
                assert proc.poll() is None, f"{name} exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{name} never listened:\n{log.read_text()}"
                port = _listening_port(log)
                time.sleep(0.1)
            wait_healthy(f"127.0.0.1:{port}", timeout_s=60, proc=proc)
            # The image's health check command says the same.
            check = subprocess.run(
                [sys.executable, str(ENTRYPOINT), "healthcheck", f"127.0.0.1:{port}"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert check.returncode == 0, (name, check.stdout, check.stderr)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_healthcheck_fails_for_a_dead_port() -> None:
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "healthcheck", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_unknown_service_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "launcher"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown service" in result.stderr


def test_compose_prometheus_config_is_derived_and_valid(tmp_path: Path) -> None:
    """Prometheus in compose scrapes the service names (every gateway/router replica through
    DNS); the file is the observability renderer's output for compose.yaml, and promtool
    accepts it with the rules from deploy/prometheus/rules."""
    prometheus = _raw()["services"]["prometheus"]
    assert (
        "./config/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro"
        in (prometheus["volumes"])
    )
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    drift = subprocess.run(
        [sys.executable, "-m", "hybridinference.render", "--check", "compose-monitoring"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert drift.returncode == 0, drift.stdout + drift.stderr
    config = yaml.safe_load((DEPLOY / "config" / "prometheus.compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["dns_sd_configs"] == [{"names": ["gateway"], "type": "A", "port": 9101}]
    settings = _mesh()
    worker_targets = {t for c in jobs["providers"]["static_configs"] for t in c["targets"]}
    assert worker_targets == {f"provider-{w.name}:{w.metrics_port}" for w in settings.providers}
    for worker in settings.providers:
        assert str(worker.metrics_port) in _image_services()[f"provider-{worker.name}"]["expose"]

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (.ci/run installs prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    rules = tmp_path / "rules"
    shutil.copytree(DEPLOY / "prometheus" / "rules", rules)
    local = tmp_path / "prometheus.yml"
    local.write_text(
        (DEPLOY / "config" / "prometheus.compose.yml")
        .read_text()
        .replace("/etc/prometheus/rules", str(rules))
    )
    result = subprocess.run(
        [promtool, "check", "config", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
