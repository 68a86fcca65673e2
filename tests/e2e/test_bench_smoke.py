"""The benchmark suite runs end to end and writes a valid result (a smoke run: no speed checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.procs import REPO

REQUIRED_KEYS = {
    "added_latency_p50_ms_c1",
    "added_latency_p99_ms_c1",
    "rps_nonstream",
    "rps_stream",
    "cpu_ms_per_request",
    "ttft_overhead_p50_ms",
    "rss_mb",
    "date",
    "machine",
}
# The Python processes each layout runs (besides the launcher).
MESH_PROCESSES = {
    "separate": {"envoy", "gateway", "router", "provider:vllm", "logger"},
    "one-process": {"envoy", "gateway", "logger"},
}


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)"
)
@pytest.mark.parametrize("layout", sorted(MESH_PROCESSES))
def test_bench_smoke_writes_valid_json(tmp_path: Path, layout: str) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--smoke", "--layout", layout, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result.keys() >= REQUIRED_KEYS
    assert result["smoke"] is True and result["layout"] == layout
    assert result["rss_mb"].keys() - {"launcher", "fake-upstream"} == MESH_PROCESSES[layout]
    assert all(value > 0 for value in result["rss_mb"].values())
    assert result["rps_nonstream"] > 0 and result["rps_stream"] > 0
    assert result["cpu_ms_per_request"] > 0
    assert "added latency p50, c=1" in proc.stdout
