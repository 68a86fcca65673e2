"""The mesh as `make up` runs it, for e2e and fault tests: the launcher with a config of
ephemeral ports, its output captured, readiness polled, every process it started cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from support.procs import free_port, write_config

GRACE_S = 2.0


@dataclass
class Mesh:
    proc: subprocess.Popen[bytes]
    output: Path
    envoy_port: int
    admin_port: int
    router_port: int
    logger_port: int
    db_path: Path
    gateway_metrics_port: int

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def pids(self, module: str) -> list[int]:
        """Live children of the launcher running ``python -m <module>`` (or another argv part)."""
        found = []
        for pid in descendants(self.proc.pid):
            with suppress(OSError):
                if module.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    found.append(pid)
        return found


def config(
    tmp_path: Path,
    gateway: dict[str, object] | None = None,
    router: dict[str, object] | None = None,
) -> tuple[Path, dict[str, int]]:
    ports = {
        name: free_port()
        for name in ["gateway", "router", "provider", "logger", "envoy", "admin", "metrics"]
    }
    mesh = {
        "gateway": {
            "port": ports["gateway"],
            "grace_period_s": GRACE_S,
            "router_address": f"127.0.0.1:{ports['router']}",
            "logger_address": f"127.0.0.1:{ports['logger']}",
            "metrics_port": ports["metrics"],
            **(gateway or {}),
        },
        "router": {"port": ports["router"], "grace_period_s": GRACE_S, **(router or {})},
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
    return write_config(tmp_path / "mesh.yaml", mesh), ports


def descendants(root: int) -> set[int]:
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


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def envoy_ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def launched(
    tmp_path: Path,
    *extra_args: str,
    gateway: dict[str, object] | None = None,
    router: dict[str, object] | None = None,
) -> Iterator[Mesh]:
    """Runs the launcher until the mesh is up; kills whatever is left on the way out.
    ``gateway``, ``router``: settings added to those sections."""
    path, ports = config(tmp_path, gateway, router)
    output = tmp_path / "launcher.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HI_")}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hybridinference.launcher",
                "--config",
                str(path),
                "--var-dir",
                str(tmp_path / "var"),
                *extra_args,
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    mesh = Mesh(
        proc,
        output,
        ports["envoy"],
        ports["admin"],
        ports["router"],
        ports["logger"],
        tmp_path / "requests.db",
        ports["metrics"],
    )
    leftovers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        # The summary is printed once Envoy is ready.
        while not (envoy_ready(ports["admin"]) and "HybridInference is up" in mesh.text()):
            assert proc.poll() is None, f"launcher exited with {proc.returncode}:\n{mesh.text()}"
            assert time.monotonic() < deadline, f"mesh not ready:\n{mesh.text()}"
            time.sleep(0.1)
        yield mesh
    finally:
        if proc.poll() is None:
            leftovers = descendants(proc.pid)
            proc.kill()
            proc.wait()
        for pid in leftovers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
