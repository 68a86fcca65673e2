"""`make up` end to end: the launcher starts the whole mesh behind Envoy, serves through it, and
stops everything (exit 0, nothing left) on SIGTERM; a child that dies takes the mesh down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.procs import REPO, free_port, write_config

GRACE_S = 2.0
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


@dataclass
class Mesh:
    proc: subprocess.Popen[bytes]
    output: Path
    envoy_port: int
    admin_port: int
    router_port: int

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def _config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {
        name: free_port() for name in ["gateway", "router", "provider", "logger", "envoy", "admin"]
    }
    config = {
        "gateway": {
            "port": ports["gateway"],
            "grace_period_s": GRACE_S,
            "router_address": f"127.0.0.1:{ports['router']}",
            "logger_address": f"127.0.0.1:{ports['logger']}",
        },
        "router": {"port": ports["router"], "grace_period_s": GRACE_S},
        "logger": {
            "port": ports["logger"],
            "grace_period_s": GRACE_S,
            "sqlite_path": str(tmp_path / "requests.db"),
        },
        # A base id of its own: several Envoys on one host must not share hot-restart memory.
        "envoy": {"port": ports["envoy"], "admin_port": ports["admin"], "base_id": ports["envoy"]},
        "providers": [
            {
                "name": "sim",
                "port": ports["provider"],
                "grace_period_s": GRACE_S,
                "endpoints": [
                    {
                        "id": "sim-a",
                        "model": "hi-sim-1",
                        "sim": {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 4},
                    }
                ],
            }
        ],
        "models": [{"name": "hi-sim", "endpoints": ["sim-a"]}],
    }
    return write_config(tmp_path / "mesh.yaml", config), ports


def _descendants(root: int) -> set[int]:
    """Every live process under ``root``, from /proc/*/stat (pid, ppid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name may contain spaces; fields after its closing parenthesis are fixed.
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    config, ports = _config(tmp_path)
    output = tmp_path / "launcher.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HI_")}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hybridinference.launcher",
                "--config",
                str(config),
                "--var-dir",
                str(tmp_path / "var"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    mesh = Mesh(proc, output, ports["envoy"], ports["admin"], ports["router"])
    leftovers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        # The summary is printed once Envoy is ready.
        while not (_ready(ports["admin"]) and "HybridInference is up" in mesh.text()):
            assert proc.poll() is None, f"launcher exited with {proc.returncode}:\n{mesh.text()}"
            assert time.monotonic() < deadline, f"mesh not ready:\n{mesh.text()}"
            time.sleep(0.1)
        yield mesh
    finally:
        if proc.poll() is None:
            leftovers = _descendants(proc.pid)
            proc.kill()
            proc.wait()
        for pid in leftovers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_serves_through_envoy_and_stops_cleanly(mesh: Mesh) -> None:
    children = _descendants(mesh.proc.pid)
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
    assert [pid for pid in children if _alive(pid)] == []
    text = mesh.text()
    assert "stopping (gateway drains first)" in text and "launcher: stopped" in text


def test_a_child_that_dies_stops_the_mesh(mesh: Mesh) -> None:
    children = _descendants(mesh.proc.pid)
    router = [
        pid
        for pid in children
        if b"hybridinference.router" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(router) == 1
    os.kill(router[0], signal.SIGKILL)
    assert mesh.proc.wait(timeout=4 * GRACE_S + 10) != 0
    assert [pid for pid in children if _alive(pid)] == []
    assert "router exited unexpectedly" in mesh.text()
