"""A real Prometheus (Debian's /usr/bin/prometheus) for tests: tmp storage, free port, HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.polling import poll
from support.procs import free_port, stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def installed() -> bool:
    return Path(PROMETHEUS).exists()


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as reply:
            return json.loads(reply.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (each item: metric labels and [ts, value])."""
        body = self._get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of a query that yields at most one series (None when empty)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["data"]["activeTargets"]
        return active

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_prometheus(
    tmp: Path, config: dict[str, Any], port: int | None = None
) -> Iterator[Prometheus]:
    """Starts Prometheus with ``config`` on ``port`` (default: a free one); polls /-/ready;
    stops it afterwards."""
    port = port or free_port()
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)

    def ready() -> bool | None:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{prometheus.logs()}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as reply:
                return True if reply.status == 200 else None
        except OSError:
            return None

    try:
        poll(ready, 30, "prometheus ready", every_s=0.1)
        yield prometheus
    finally:
        stop_process(proc)
