"""The Envoy config is checked by Envoy itself (`--mode validate`), as committed and as rendered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridinference.common.settings import load_settings
from hybridinference.render import envoy_config
from support.procs import REPO

ENVOY = str(Path(sys.executable).parent / "envoy")


def validate(config: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # A base id of our own, so a validation never collides with a running Envoy's shared memory.
    base_id = 40_000 + os.getpid() % 10_000
    return subprocess.run(
        [
            ENVOY,
            "--mode",
            "validate",
            "-c",
            str(config),
            "--base-id",
            str(base_id),
            "--log-level",
            "error",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_committed_config_is_valid() -> None:
    result = validate(envoy_config.TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_config_matches_the_defaults() -> None:
    """As committed, the file is what rendering the default settings produces (bar the path)."""
    committed = yaml.safe_load(envoy_config.TEMPLATE.read_text())
    rendered = envoy_config.apply_settings(
        yaml.safe_load(envoy_config.TEMPLATE.read_text()), load_settings(None)
    )
    transcoder = _transcoder(rendered)
    assert transcoder["proto_descriptor"] == str(envoy_config.DESCRIPTOR)
    transcoder["proto_descriptor"] = _transcoder(committed)["proto_descriptor"]
    assert rendered == committed


def test_rendered_config_is_valid_from_anywhere(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        envoy={"host": "127.0.0.1", "port": 18123, "admin_port": 19123, "base_id": 7},
        gateway={"host": "0.0.0.0", "port": 16001},
    )
    path = envoy_config.render(settings, tmp_path / "run")
    config = yaml.safe_load(path.read_text())
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "127.0.0.1", "port_value": 18123}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 19123
    cluster = config["static_resources"]["clusters"][0]
    upstream = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    # A gateway bound to the wildcard is dialled on loopback.
    assert upstream["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 16001,
    }
    assert Path(_transcoder(config)["proto_descriptor"]).is_absolute()
    # The descriptor path is absolute, so the working directory does not matter.
    result = validate(path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "breakage",
    ["unknown_service", "unknown_field", "missing_descriptor"],
)
def test_broken_config_is_rejected(tmp_path: Path, breakage: str) -> None:
    config = envoy_config.apply_settings(
        yaml.safe_load(envoy_config.TEMPLATE.read_text()), load_settings(None)
    )
    transcoder = _transcoder(config)
    if breakage == "unknown_service":
        transcoder["services"].append("hybridinference.nope.v1.NoService")
    elif breakage == "unknown_field":
        transcoder["print_options"]["stream_sse_style"] = True
    else:
        transcoder["proto_descriptor"] = str(tmp_path / "missing.pb")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = validate(path)
    assert result.returncode != 0


def _transcoder(config: dict[str, Any]) -> dict[str, Any]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for http_filter in hcm["typed_config"]["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            config_: dict[str, Any] = http_filter["typed_config"]
            return config_
    raise AssertionError("no transcoder")


def test_tracing_off_adds_no_tracer() -> None:
    config = envoy_config.apply_settings(
        yaml.safe_load(envoy_config.TEMPLATE.read_text()), load_settings(None)
    )
    assert "tracing" not in _hcm(config)
    assert [c["name"] for c in config["static_resources"]["clusters"]] == [
        "gateway",
        "edge_loopback",
    ]


def test_tracing_on_renders_a_valid_opentelemetry_tracer(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        envoy={"port": 18124, "admin_port": 19124},
        tracing={"enabled": True, "otlp_endpoint": "http://collector.local:14317"},
    )
    path = envoy_config.render(settings, tmp_path / "run")
    config = yaml.safe_load(path.read_text())
    provider = _hcm(config)["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["service_name"] == "envoy"
    cluster_name = provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters[cluster_name]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "collector.local",
        "port_value": 14317,
    }
    # Rendering twice (the launcher re-renders on restart) keeps one collector cluster.
    again = envoy_config.apply_settings(config, settings)
    assert [c["name"] for c in again["static_resources"]["clusters"]].count(cluster_name) == 1
    result = validate(path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tracing_to_an_https_collector_is_valid(tmp_path: Path) -> None:
    settings = load_settings(
        None, tracing={"enabled": True, "otlp_endpoint": "https://otel.example.com"}
    )
    path = envoy_config.render(settings, tmp_path / "run")
    cluster = yaml.safe_load(path.read_text())["static_resources"]["clusters"][-1]
    assert cluster["transport_socket"]["typed_config"]["sni"] == "otel.example.com"
    assert validate(path, cwd=tmp_path).returncode == 0


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][
        0
    ]["typed_config"]
    return hcm


def test_edge_timeouts_and_loopback_follow_the_settings() -> None:
    settings = load_settings(
        None,
        envoy={
            "host": "0.0.0.0",
            "port": 18125,
            "request_headers_timeout_s": 1.5,
            "request_timeout_s": 45,
        },
    )
    config = envoy_config.apply_settings(
        yaml.safe_load(envoy_config.TEMPLATE.read_text()), settings
    )
    hcm = _hcm(config)
    assert hcm["request_headers_timeout"] == "1.5s"
    assert hcm["request_timeout"] == "45s"
    # The gRPC-over-HTTP/1 detour dials this listener itself (a wildcard bind on loopback).
    loopback = next(
        c for c in config["static_resources"]["clusters"] if c["name"] == "edge_loopback"
    )
    endpoint = loopback["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18125}


def test_rendered_config_has_no_yaml_aliases(tmp_path: Path) -> None:
    """The template shares route parts through anchors; rendered files spell everything out."""
    path = envoy_config.render(load_settings(None), tmp_path / "run")
    text = path.read_text()
    assert "&id0" not in text and "*id0" not in text


def _route_prefixes(config: dict[str, Any]) -> list[str]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return [route["match"].get("prefix", "") for route in routes]


@pytest.mark.parametrize(
    ("auth", "public", "refused"),
    [(False, None, False), (True, None, True), (True, True, False), (False, False, True)],
)
def test_health_and_reflection_on_the_public_port(
    tmp_path: Path, auth: bool, public: bool | None, refused: bool
) -> None:
    settings = load_settings(None).model_copy(deep=True)
    settings.gateway.auth.enabled = auth
    settings.envoy.public_introspection = public
    config = envoy_config.apply_settings(
        yaml.safe_load(envoy_config.TEMPLATE.read_text()), settings
    )
    prefixes = _route_prefixes(config)
    blocked = [p for p in prefixes if "grpc.health" in p or "grpc.reflection" in p]
    assert bool(blocked) is refused
    if refused:
        # In front of the catch-all, so they win.
        assert prefixes.index("/grpc.health.v1.Health/") < prefixes.index("/")
        target = tmp_path / "envoy.yaml"
        target.write_text(yaml.safe_dump(config))
        result = validate(target)
        assert result.returncode == 0, result.stdout + result.stderr
