"""The launcher's pure parts: what it starts, in which order it stops, what it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridinference.common.settings import MeshSettings, load_settings
from hybridinference.launcher import plan, summary
from hybridinference.launcher.__main__ import main
from hybridinference.render import prometheus_config
from support.procs import REPO


def test_start_stages_and_stop_order() -> None:
    settings = load_settings(None)
    specs = plan.services(settings, Path("/etc/mesh.yaml"))
    assert [(s.name, s.stage) for s in specs] == [
        ("logger", 0),
        ("provider:sim", 0),
        ("router", 1),
        ("gateway", 2),
    ]
    provider = specs[1]
    assert provider.argv[1:] == [
        "-m",
        "hybridinference.providers",
        "--worker",
        "sim",
        "--config",
        "/etc/mesh.yaml",
    ]
    assert provider.health_address == "127.0.0.1:50053"
    assert specs[3].stop_timeout_s == settings.gateway.grace_period_s + plan.STOP_SLACK_S
    envoy = plan.envoy(settings, "/bin/envoy", Path("/run/envoy.yaml"))
    assert envoy.health_address is None and "--concurrency" in envoy.argv
    names = [s.name for s in [*specs, envoy]]
    assert plan.stop_order(names) == ["gateway", "router", "provider:sim", "logger", "envoy"]


def test_a_colocated_worker_gets_no_process_port_or_scrape_job() -> None:
    default = load_settings(None).providers[0].model_dump()
    # Same port as the gateway: unused when colocated, so no conflict.
    worker = {**default, "colocated": True, "port": 50051}
    settings = load_settings(None, providers=[worker])
    assert [s.name for s in plan.services(settings, Path("/etc/mesh.yaml"))] == [
        "logger",
        "router",
        "gateway",
    ]
    assert plan.port_conflicts(settings) == []
    jobs = [job["job_name"] for job in prometheus_config.render(settings)["scrape_configs"]]
    assert "providers" not in jobs and "router" in jobs


def test_one_process_example_config_runs_only_logger_and_gateway() -> None:
    settings = load_settings(str(REPO / "deploy/config/one-process.yaml"))
    assert settings.router.colocated and all(w.colocated for w in settings.providers)
    specs = plan.services(settings, Path("/etc/mesh.yaml"))
    assert [s.name for s in specs] == ["logger", "gateway"]


def test_port_problems_are_found_before_starting() -> None:
    assert plan.port_conflicts(load_settings(None)) == []
    settings = load_settings(None, router={"port": 50051}, envoy={"admin_port": 0})
    problems = plan.port_conflicts(settings)
    assert any("router: port 50051 is also used by gateway" in p for p in problems)
    assert any("envoy admin: port 0" in p for p in problems)


def test_summary_names_everything_a_user_needs(tmp_path: Path) -> None:
    settings = load_settings(None)
    text = summary.render(settings, None, tmp_path, tmp_path / "var/log")
    for expected in [
        "http://127.0.0.1:8080",
        "curl -N http://127.0.0.1:8080/v1/chat/completions",
        '"stream": true',
        'base_url="http://127.0.0.1:8080/v1"',
        "grpcurl -plaintext 127.0.0.1:8080 list",
        "127.0.0.1:50051",
        "127.0.0.1:50052",
        "127.0.0.1:50053",
        "127.0.0.1:50054",
        "127.0.0.1:9901",
        "built-in defaults",
        "auth:         off",
        "console:      http://127.0.0.1:8080/console/",
        f"SQLite {tmp_path / 'var/requests.db'}",
    ]:
        assert expected in text, expected


def test_summary_hides_database_password(tmp_path: Path) -> None:
    settings = load_settings(None, logger={"database_url": "postgresql://u:secret@db:5432/hi"})
    line = summary.request_log(settings, tmp_path)
    assert line == "PostgreSQL postgresql://***@db:5432/hi"


def test_launcher_refuses_conflicting_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # load_settings records the file in the environment (for children); undone after the test.
    monkeypatch.delenv("HI_CONFIG", raising=False)
    config = tmp_path / "mesh.yaml"
    config.write_text("router:\n  port: 50051\n")
    assert main(["--config", str(config)]) == 2


def test_example_config_shows_every_key_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HI_CONFIG", raising=False)
    example = REPO / "deploy" / "config" / "hybridinference.example.yaml"
    raw = yaml.safe_load(example.read_text())
    defaults = MeshSettings()
    assert load_settings(str(example)) == defaults
    assert _keys(raw) == _keys(defaults.model_dump())


def _keys(value: object, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        keys = set()
        for key, item in value.items():
            keys |= {f"{prefix}{key}"} | _keys(item, f"{prefix}{key}.")
        return keys
    if isinstance(value, list):
        return set().union(*(_keys(item, f"{prefix}[].") for item in value)) if value else set()
    return set()
