"""A private Podman for one test run: its own storage, its own API socket, removed afterwards.

Everything the run makes (images, containers, volumes) lives in a storage root under the run's
directory, so cleaning up can never touch a container or image of anyone else on the machine,
and removing that root removes everything the run made. The settings this machine needs
(checked): runc, the cgroupfs manager, no default rlimits (setting them is not permitted here);
crun refuses the machine's cgroup mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from support.polling import poll
from support.procs import stop_process

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


@dataclass(frozen=True)
class Build:
    image: str
    seconds: float
    output: str


class Podman:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.root = run_dir / "storage"
        self.runroot = run_dir / "runroot"
        self.socket = run_dir / "podman.sock"
        self.conf = run_dir / "containers.conf"
        self._service: subprocess.Popen[bytes] | None = None
        self.tmp = run_dir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONTAINERS_CONF)

    @property
    def env(self) -> dict[str, str]:
        # TMPDIR: podman's and buildah's scratch files (imports, RUN cache mounts) stay in the run.
        return {**os.environ, "CONTAINERS_CONF": str(self.conf), "TMPDIR": str(self.tmp)}

    @property
    def argv(self) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot)]

    def run(self, *args: str, timeout_s: float = 120, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            [*self.argv, *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            err = result.stderr.decode(errors="replace")
            raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{err}")
        return out

    def import_rootfs(self, tarball: Path, image: str, changes: Sequence[str]) -> None:
        argv = [*self.argv, "import"]
        for change in changes:
            argv += ["--change", change]
        with tarball.open("rb") as stream:
            result = subprocess.run(
                [*argv, "-", image], stdin=stream, env=self.env, capture_output=True, check=False
            )
        if result.returncode != 0:
            raise AssertionError(f"podman import failed:\n{result.stderr.decode(errors='replace')}")

    def build(
        self,
        image: str,
        context: Path,
        containerfile: Path,
        build_args: dict[str, str],
        timeout_s: float = 900,
    ) -> Build:
        """`podman build` with host networking (RUN steps reach the package registries)."""
        argv = [*self.argv, "build", "--network", "host", "--layers", "-t", image]
        argv += ["-f", str(containerfile)]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        # One stream: the step lines and what each step printed stay in order.
        result = subprocess.run(
            [*argv, str(context)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        seconds = time.monotonic() - started
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise AssertionError(f"building {image} failed:\n{output[-6000:]}")
        return Build(image, seconds, output)

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).strip())

    # --- the Docker-compatible API service docker-compose talks to ---

    def start_service(self) -> str:
        """Starts `podman system service` on the private socket; returns DOCKER_HOST for it."""
        # The service writes its log through its own copy of the descriptor; ours is closed.
        with (self.run_dir / "service.log").open("wb") as log:
            self._service = subprocess.Popen(
                [*self.argv, "system", "service", "--time=0", f"unix://{self.socket}"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        poll(
            lambda: True if self.socket.exists() else None,
            timeout_s=30,
            what="podman's API socket",
            every_s=0.1,
        )
        return f"unix://{self.socket}"

    def stop_service(self) -> None:
        if self._service is not None:
            stop_process(self._service)
            self._service = None

    def destroy(self) -> None:
        """Removes every container, volume and image of this storage root, then the root."""
        self.stop_service()
        for args in (
            ("rm", "--all", "--force", "--time", "0"),
            ("volume", "rm", "--all", "--force"),
            ("rmi", "--all", "--force"),
        ):
            subprocess.run([*self.argv, *args], env=self.env, capture_output=True, check=False)
        # Overlay mounts of the storage root must be gone before the files can go.
        subprocess.run(
            [*self.argv, "system", "reset", "--force"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.run_dir, ignore_errors=True)
