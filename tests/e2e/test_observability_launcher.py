"""`make up` (the launcher with --prometheus) starts a real Prometheus that scrapes the mesh with
the repository's rules loaded, prints its URL, and stops it with the mesh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from support import prometheus as prom
from support.mesh import mesh_config
from support.polling import poll
from support.procs import REPO, free_port, wait_healthy, write_config

pytestmark = pytest.mark.skipif(
    not prom.installed(), reason="prometheus binary not installed (apt-get install prometheus)"
)


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: dict[str, object] = json.loads(reply.read())
        return body


def test_launcher_starts_prometheus_and_prints_its_url(tmp_path: Path) -> None:
    config = mesh_config(tmp_path)
    for section in ("gateway", "router", "logger"):
        config[section]["metrics_port"] = free_port()
    for worker in config["providers"]:
        worker["metrics_port"] = free_port()
    port = free_port()
    config["prometheus"] = {"port": port, "scrape_interval_s": 0.5}
    path = write_config(tmp_path / "mesh.yaml", config)
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "hybridinference.launcher", "--prometheus"),
                *("--config", str(path), "--var-dir", str(tmp_path / "var")),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"127.0.0.1:{config['envoy']['port']}", timeout_s=60, proc=proc)
        poll(
            lambda: True if f"prometheus:   {base}" in log_path.read_text() else None,
            30,
            "the Prometheus URL in the launcher's output",
        )

        def every_target_up() -> bool | None:
            data = _get(f"{base}/api/v1/targets")["data"]
            targets = data["activeTargets"]  # type: ignore[index]
            healthy = [t for t in targets if t["health"] == "up"]
            return True if targets and len(healthy) == len(targets) == 6 else None

        poll(every_target_up, 30, "every mesh target up", every_s=0.25)
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        assert {"HIServiceDown", "HITTFTBudgetBurnFast", "HILoggerDatabaseDisconnected"} <= alerts
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-5000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/-/ready", timeout=1)
