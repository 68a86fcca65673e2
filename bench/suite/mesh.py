"""The benchmark's processes: the fake upstream and the whole mesh (launcher, Envoy, gateway,
router, one vllm provider worker pointed at the fake, logger), every feature on, free ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.mesh import Mesh, running_mesh
from support.procs import REPO, free_port, stop_process

# Model names clients send. "bench" answers at once (the whole stream in one write);
# "bench-stream" sends each token in its own write, 0.5 ms apart, as an engine does.
FAST_MODEL = "bench"
STREAM_MODEL = "bench-stream"
_UPSTREAM_MODELS = {FAST_MODEL: "bench", STREAM_MODEL: "bench:ttft=0:itl=0.5"}


@contextmanager
def fake_upstream() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Starts bench/suite/fake_upstream.py; yields its base URL (…/v1) and process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.suite.fake_upstream", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1", proc
    finally:
        stop_process(proc, timeout_s=10)


def upstream_model(model: str) -> str:
    """The model name the fake sees for a mesh model (direct baseline requests use it)."""
    return _UPSTREAM_MODELS[model]


# Where the router and the vllm worker run: each in its own process (the default mesh), the
# worker's adapters inside the router, or both inside the gateway (one Python process on the
# data path). See README "Colocated workers".
LAYOUTS = ("separate", "worker-in-router", "one-process")


def bench_config(tmp: Path, upstream_url: str, layout: str = "separate") -> dict[str, Any]:
    """The default mesh's features (metrics servers and interceptors, logger, validation,
    routing, Envoy access log) with a vllm worker instead of the simulator; auth off.
    ``layout``: one of LAYOUTS."""
    envoy_port = free_port()
    return {
        "log_level": "INFO",
        "envoy": {"port": envoy_port, "admin_port": free_port(), "base_id": envoy_port},
        "gateway": {
            "port": free_port(),
            "metrics_port": free_port(),
            "grace_period_s": 2,
            "log_spool_dir": str(tmp / "spool" / "gateway-{port}"),
        },
        "router": {
            "port": free_port(),
            "metrics_port": free_port(),
            "grace_period_s": 2,
            "colocated": layout == "one-process",
        },
        "logger": {
            "port": free_port(),
            "metrics_port": free_port(),
            "sqlite_path": str(tmp / "requests.db"),
        },
        "providers": [
            {
                "name": "vllm",
                "kind": "vllm",
                "port": free_port(),
                "metrics_port": free_port(),
                "grace_period_s": 2,
                "colocated": layout != "separate",
                "endpoints": [
                    {"id": f"vllm-{name}", "model": upstream, "base_url": upstream_url}
                    for name, upstream in _UPSTREAM_MODELS.items()
                ],
            }
        ],
        "models": [{"name": name, "endpoints": [f"vllm-{name}"]} for name in _UPSTREAM_MODELS],
    }


@contextmanager
def running(tmp: Path, upstream_url: str, layout: str = "separate") -> Iterator[Mesh]:
    with running_mesh(tmp, bench_config(tmp, upstream_url, layout)) as mesh:
        yield mesh
