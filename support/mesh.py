"""The whole mesh (launcher → logger, provider workers, router, gateway, Envoy) on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.launched import envoy_ready
from support.polling import poll
from support.procs import REPO, free_port, stop_process, wait_healthy, write_config


@dataclass
class Mesh:
    config: dict[str, Any]
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def envoy_port(self) -> int:
        return int(self.config["envoy"]["port"])

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy_port}"

    @property
    def envoy_grpc(self) -> str:
        return f"127.0.0.1:{self.envoy_port}"

    def address(self, section: str) -> str:
        return f"127.0.0.1:{self.config[section]['port']}"

    def worker_address(self, name: str) -> str:
        worker = next(w for w in self.config["providers"] if w["name"] == name)
        return f"127.0.0.1:{worker['port']}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def mesh_config(tmp: Path) -> dict[str, Any]:
    """Free ports everywhere; a normal, a slow and a mid-stream-dying simulated endpoint.

    /metrics is off (port 0) so test meshes never contend for the default metrics ports;
    tests that scrape set their own free ones.
    """
    envoy_port = free_port()
    config: dict[str, Any] = {
        "log_level": "INFO",
        "envoy": {
            "port": envoy_port,
            "admin_port": free_port(),
            # Several Envoys on one host need distinct shared-memory ids.
            "base_id": envoy_port,
        },
        "gateway": {"port": free_port(), "grace_period_s": 3, "metrics_port": 0},
        "router": {
            "port": free_port(),
            "grace_period_s": 3,
            "health_interval_s": 0.5,
            "metrics_port": 0,
        },
        "logger": {
            "port": free_port(),
            "sqlite_path": str(tmp / "requests.db"),
            "metrics_port": 0,
        },
        "providers": [
            {
                "name": "sim",
                "metrics_port": 0,
                "port": free_port(),
                "grace_period_s": 3,
                "endpoints": [
                    {
                        "id": "sim-a",
                        "model": "hi-sim-1",
                        "price_prompt_per_1m": 1.0,
                        "price_completion_per_1m": 2.0,
                        "sim": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 12},
                    },
                    {
                        "id": "sim-slow",
                        "model": "hi-sim-slow",
                        "sim": {"ttft_ms": 5, "itl_ms": 100, "output_tokens": 200},
                    },
                    {
                        "id": "sim-dying",
                        "model": "hi-sim-dying",
                        "sim": {
                            "ttft_ms": 5,
                            "itl_ms": 1,
                            "output_tokens": 12,
                            "abort_after_tokens": 3,
                        },
                    },
                ],
            }
        ],
        "models": [
            {"name": "hi-sim", "endpoints": ["sim-a"]},
            {"name": "hi-slow", "endpoints": ["sim-slow"]},
            {"name": "hi-dying", "endpoints": ["sim-dying"]},
        ],
    }
    return config


def _public_health(config: dict[str, Any]) -> bool:
    public = config.get("envoy", {}).get("public_introspection")
    auth = config.get("gateway", {}).get("auth", {}).get("enabled", False)
    return bool(public) if public is not None else not auth


@contextmanager
def running_mesh(
    tmp: Path, config: dict[str, Any] | None = None, *, serving_through_envoy: bool = True
) -> Iterator[Mesh]:
    """The mesh, once it serves through Envoy; or, with ``serving_through_envoy=False`` (an Envoy
    set up to refuse requests), once the gateway serves and Envoy's admin says it is ready."""
    config = config or mesh_config(tmp)
    config_path = write_config(tmp / "mesh.yaml", config)
    log_path = tmp / "launcher.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hybridinference.launcher",
                "--config",
                str(config_path),
                "--var-dir",
                str(tmp / "var"),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    mesh = Mesh(config, config_path, proc, log_path)
    try:
        if serving_through_envoy and _public_health(config):
            # Envoy starts last, so the gateway answering through it means the whole mesh is up.
            wait_healthy(mesh.envoy_grpc, timeout_s=60, proc=proc)
        else:
            # (health is not served through Envoy with auth on: see _public_health)
            wait_healthy(mesh.address("gateway"), timeout_s=60, proc=proc)
            poll(lambda: envoy_ready(config["envoy"]["admin_port"]) or None, 30, "Envoy ready")
        yield mesh
    except Exception:
        print(mesh.logs()[-20000:])
        raise
    finally:
        stop_process(proc, timeout_s=30)
