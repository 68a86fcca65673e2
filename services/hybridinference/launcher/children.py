"""Child processes: start with prefixed output, poll readiness, stop with a deadline.

Children run in their own process group so a Ctrl-C on the terminal reaches only the launcher,
which then stops them in drain order (a terminal SIGINT to the whole group would stop Envoy while
the gateway is still draining). PR_SET_PDEATHSIG makes the kernel stop them if the launcher itself
is killed, so nothing is ever left behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridinference.common.channels import CHANNEL_OPTIONS, dial
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.launcher.plan import ChildSpec

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StartError(Exception):
    """A child did not become ready; the message says which and why."""


@dataclass
class Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process
    log_path: Path
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> int:
        """SIGTERM, wait up to the spec's timeout, then SIGKILL; returns the exit code."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), self.spec.stop_timeout_s)
            except TimeoutError:
                print(
                    f"launcher: {self.name} did not stop within {self.spec.stop_timeout_s:.0f}s;"
                    " killing it",
                    file=sys.stderr,
                    flush=True,
                )
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            # The pipe closes when the child exits; let the last lines out.
            await asyncio.wait([self._pump], timeout=1.0)
        code = self.proc.returncode
        assert code is not None
        return code


Writer = Callable[[str], None]


def prefixer(name: str, width: int, out: IO[str]) -> Writer:
    """Writes a child's line to the terminal as ``name | line`` (coloured when a terminal)."""
    label = name.ljust(width)
    if out.isatty():
        colour = 31 + (sum(name.encode()) % 6)
        label = f"\x1b[{colour}m{label}\x1b[0m"

    def write(line: str) -> None:
        out.write(f"{label} | {line}\n")
        out.flush()

    return write


async def _pump(stream: asyncio.StreamReader, write: Writer, log_file: IO[bytes]) -> None:
    while line := await stream.readline():
        log_file.write(line)
        log_file.flush()
        write(line.decode(errors="replace").rstrip("\n"))
    log_file.close()


def _open_log(log_dir: Path, name: str, append: bool) -> tuple[Path, IO[bytes]]:
    # Truncated per run (the terminal shows the same lines; this copy is for after the fact), but
    # appended to on a restart: the crashed run's last lines are what an operator needs.
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name.replace(':', '-')}.log"
    return path, path.open("ab" if append else "wb")


async def start(
    spec: ChildSpec,
    env: dict[str, str],
    log_dir: Path,
    write: Writer,
    cwd: Path,
    restart: bool = False,
) -> Child:
    """Starts the child; its stdout and stderr go to the terminal (prefixed) and its log file."""
    log_path, log_file = _open_log(log_dir, spec.name, append=restart)
    proc = await asyncio.create_subprocess_exec(
        *spec.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        process_group=0,
        preexec_fn=_die_with_parent,
        # Long JSON log lines (a stack trace in one line) must not break the reader.
        limit=1 << 20,
    )
    assert proc.stdout is not None
    child = Child(spec, proc, log_path)
    child._pump = asyncio.create_task(_pump(proc.stdout, write, log_file))
    return child


async def _grpc_serving(address: str, tls: TlsSettings | None = None) -> bool:
    # A TLS service is checked over TLS, with its section's client side (mTLS included).
    async with dial(address, tls, CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def http_status(host: str, port: int, path: str, timeout_s: float = 0.5) -> int | None:
    """The status code of a plain HTTP GET, or None when nothing answers."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def wait_ready(child: Child, timeout_s: float, envoy_admin: tuple[str, int]) -> None:
    """Polls until the child answers its readiness check; raises StartError if it exits or the
    time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not child.running:
            raise StartError(
                f"{child.name} exited with code {child.proc.returncode} while "
                f"starting (see {child.log_path})"
            )
        if child.spec.health_address is not None:
            ready = await _grpc_serving(child.spec.health_address, child.spec.health_tls)
        else:
            ready = await http_status(*envoy_admin, "/ready") == 200
        if ready:
            return
        if time.monotonic() > deadline:
            where = child.spec.health_address or f"{envoy_admin[0]}:{envoy_admin[1]}/ready"
            raise StartError(
                f"{child.name} not ready at {where} after {timeout_s:.0f}s (see {child.log_path})"
            )
        await asyncio.sleep(_POLL_S)


def child_env(config: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    # Lines as they happen, not in 8 KiB blocks, so the terminal shows what is going on.
    env["PYTHONUNBUFFERED"] = "1"
    if config is not None:
        env["HI_CONFIG"] = str(config)
    return env
