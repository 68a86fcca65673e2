"""Real service processes for integration and e2e tests: ephemeral ports, health polling, teardown.

Ports are chosen up front (bind to port 0, read it, release it) and written into a mesh config file,
because each service learns its peers' addresses from that one file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this test process has not handed out before.

    The kernel may return a just-released port again, so two services of one fixture could
    otherwise be given the same port.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15.0
) -> int:
    """Asks a child to stop with ``sig``, kills it after ``timeout_s``; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_healthy(
    address: str,
    timeout_s: float = 20.0,
    service: str = "",
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Polls grpc.health.v1 until SERVING; fails early if the process already exited."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process for {address} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not healthy after {timeout_s}s")
            time.sleep(0.05)


@dataclass
class ServiceProcess:
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        return stop_process(self.proc, sig, timeout_s)


def start_service(
    module_args: Sequence[str],
    config: Path,
    address: str,
    log_dir: Path,
    name: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> ServiceProcess:
    """Starts ``python -m services.<...>`` with the config and waits until it is healthy."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, "HI_CONFIG": str(config), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args, "--config", str(config)],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(name, address, proc, log_path)
    if wait:
        try:
            wait_healthy(address, proc=proc)
        except Exception:
            service.stop(signal.SIGKILL)
            raise RuntimeError(f"{name} failed to start:\n{service.logs()}") from None
    return service


@contextmanager
def running(*services: ServiceProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()
