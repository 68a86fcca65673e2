"""`make up` end to end: the launcher starts the whole mesh behind Envoy, serves through it, and
stops everything (exit 0, nothing left) on SIGTERM. Crashes and restarts: tests/fault/."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.launched import GRACE_S, Mesh, alive, descendants, launched
from support.procs import REPO

SERVICES = [
    "services/hybridinference/logger",
    "services/hybridinference/providers",
    "services/hybridinference/router",
    "services/hybridinference/gateway",
]

pytestmark = pytest.mark.skipif(
    not all((REPO / s / "__main__.py").exists() for s in SERVICES),
    reason="the mesh services are not all present yet",
)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with launched(tmp_path) as running:
        yield running


def test_serves_through_envoy_and_stops_cleanly(mesh: Mesh) -> None:
    children = descendants(mesh.proc.pid)
    # logger, one provider worker, router, gateway, envoy.
    assert len(children) >= 5, mesh.text()

    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.envoy_port}/v1/models", timeout=10) as r:
        assert r.status == 200
        models = json.loads(r.read())
    assert [m["id"] for m in models["data"]] == ["hi-sim"]

    # Native gRPC through the same port (what grpcurl uses).
    with grpc.insecure_channel(f"127.0.0.1:{mesh.envoy_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # The CLI streams a reply through Envoy with the same config.
    config = mesh.output.parent / "mesh.yaml"
    chat = subprocess.run(
        [sys.executable, "-m", "hybridinference.cli", "--config", str(config), "chat", "hello"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() and "endpoint sim-a" in chat.stderr

    started = time.monotonic()
    mesh.proc.send_signal(signal.SIGTERM)
    # Every service drains within its grace period; nothing is in flight here.
    assert mesh.proc.wait(timeout=4 * GRACE_S + 10) == 0, mesh.text()
    assert time.monotonic() - started < 4 * GRACE_S + 10
    assert [pid for pid in children if alive(pid)] == []
    text = mesh.text()
    assert "stopping (gateway drains first)" in text and "launcher: stopped" in text
