"""docker-compose (Debian's 1.29) against the run's Podman socket, and the health-check clock.

Podman schedules health checks through systemd timers; where systemd is not PID 1 (this
machine, most CI containers) none would ever run, every container would stay "starting" and
`depends_on: condition: service_healthy` would wait forever. HealthClock does that timer's
job: it runs each container's own health check (`podman healthcheck run`, the compose file's
command) every few seconds, so health states move exactly as they would under systemd.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from support.procs import REPO
from tests.compose.podman import Podman

COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
OVERRIDE = Path(__file__).resolve().parent / "docker-compose.test.yml"
# What the test runs: the default services minus Grafana (Debian does not package it).
SERVICES = (
    "postgres", "alertmanager", "prometheus", "provider-sim", "router", "logger", "envoy",
    "gateway",
)  # fmt: skip


class Compose:
    """docker-compose on the compose file with the test's override merged in.

    The two files are merged by docker-compose itself (`config`); from the result only the
    published ports are dropped, because compose refuses `ports` with `network_mode: host`
    and an override can add to a list but not remove from it. With host networking the
    services' own 127.0.0.1 listeners are what the host reaches anyway.
    """

    def __init__(self, podman: Podman, project: str, env: dict[str, str]) -> None:
        self.podman = podman
        self.project = project
        self.env = env
        # An empty env file: a developer's deploy/.env must not change the test.
        env_file = podman.run_dir / "compose.env"
        env_file.write_text("")
        base = ["docker-compose", "--project-name", project, "--env-file", str(env_file)]
        merged = subprocess.run(
            [*base, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE), "config"],
            capture_output=True, env=env, timeout=60, check=False, text=True,
        )  # fmt: skip
        if merged.returncode != 0:
            raise AssertionError(f"docker-compose config failed:\n{merged.stderr}")
        config = yaml.safe_load(merged.stdout)
        for name in SERVICES:
            service = config["services"][name]
            assert service["network_mode"] == "host", name
            service.pop("ports", None)
        self.file = podman.run_dir / "docker-compose.merged.yml"
        self.file.write_text(yaml.safe_dump(config, sort_keys=False))
        self._argv = [*base, "-f", str(self.file)]

    def __call__(self, *args: str, timeout_s: float = 300) -> str:
        result = subprocess.run(
            [*self._argv, *args],
            capture_output=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
            text=True,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout

    def container(self, service: str) -> str:
        """The id of the service's (single) container."""
        out = self.podman.run(
            "ps", "--all", "--quiet", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip
        ids = out.split()
        assert len(ids) == 1, f"{service}: expected one container, found {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(
            self.podman.run("container", "inspect", self.container(service))
        )
        return data[0]

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        health = state.get("Health") or state.get("Healthcheck") or {}
        return str(health.get("Status", ""))

    def check_health(self, service: str) -> bool:
        """Runs the service's health check now; True if it passes."""
        result = subprocess.run(
            [*self.podman.argv, "healthcheck", "run", self.container(service)],
            capture_output=True, env=self.podman.env, timeout=60, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def logs(self, services: Sequence[str] = SERVICES) -> str:
        try:
            return self("logs", "--no-color", "--tail", "40", *services, timeout_s=60)
        except (AssertionError, subprocess.TimeoutExpired) as error:
            return f"(no logs: {error})"


class HealthClock:
    """Runs every running container's health check each ``interval_s`` (see the module doc)."""

    def __init__(self, podman: Podman, interval_s: float = 2.0) -> None:
        self.podman = podman
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-clock", daemon=True)

    def __enter__(self) -> HealthClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            # Filters on one key are ORed: every running container that has a health check.
            ids = subprocess.run(
                [*self.podman.argv, "ps", "--quiet", "--filter", "health=starting",
                 "--filter", "health=healthy", "--filter", "health=unhealthy"],
                capture_output=True, env=self.podman.env, text=True, check=False,
            ).stdout.split()  # fmt: skip
            for container in ids:
                if self._stop.is_set():
                    return
                # Exit status 1 is "unhealthy", recorded in the container's state: not an error.
                subprocess.run(
                    [*self.podman.argv, "healthcheck", "run", container],
                    capture_output=True, env=self.podman.env, check=False, timeout=60,
                )  # fmt: skip
