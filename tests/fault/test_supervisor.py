"""The launcher is a supervisor: a SIGKILLed service comes back while the rest keep serving, no
acknowledged record is lost, and a service that keeps crashing is named and stops the mesh."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import grpc

from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from support.launched import Mesh, alive, descendants, launched
from support.polling import poll

BODY = json.dumps(
    {"model": "hi-sim", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
).encode()


def _chat(mesh: Mesh, request_id: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.envoy_port}/v1/chat/completions",
        data=BODY,
        headers={"content-type": "application/json", "x-request-id": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _stored_ids(mesh: Mesh) -> set[str]:
    if not mesh.db_path.exists():
        return set()
    with sqlite3.connect(mesh.db_path) as db:
        try:
            rows = db.execute("SELECT client_request_id FROM request_log").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return set()
    return {str(row[0]) for row in rows}


def _endpoints(mesh: Mesh) -> list[router_pb2.EndpointState]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.router_port}") as channel:
        reply = router_pb2_grpc.RouterServiceStub(channel).ListEndpoints(
            router_pb2.ListEndpointsRequest(), timeout=5
        )
    return list(reply.endpoints)


def _kill_one(mesh: Mesh, module: str) -> int:
    pids = mesh.pids(module)
    assert len(pids) == 1, (module, pids, mesh.text())
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def _back(mesh: Mesh, name: str, times: int) -> bool | None:
    return True if mesh.text().count(f"launcher: {name} is back") >= times else None


def test_a_killed_logger_is_back_and_no_acknowledged_record_is_lost(tmp_path: Path) -> None:
    with launched(tmp_path) as mesh:
        served = []
        for i in range(20):
            assert _chat(mesh, f"before-{i}") == 200
            served.append(f"before-{i}")
        killed = _kill_one(mesh, "hybridinference.logger")
        # The others keep serving while the logger is down and while it restarts: the gateway
        # holds the records (memory, then its spool) and ships them once the logger is back.
        for i in range(20):
            assert _chat(mesh, f"during-{i}") == 200
            served.append(f"during-{i}")
        poll(lambda: _back(mesh, "logger", 1), 30, "the logger restarted")
        assert not alive(killed)
        for i in range(10):
            assert _chat(mesh, f"after-{i}") == 200
            served.append(f"after-{i}")
        poll(
            lambda: True if _stored_ids(mesh) >= set(served) else None,
            30,
            f"all {len(served)} records stored",
        )
        with sqlite3.connect(mesh.db_path) as db:
            # Exactly once each: a batch replayed after the kill is not stored twice.
            assert db.execute("SELECT count(*) FROM request_log").fetchone() == (len(served),)
        assert mesh.proc.poll() is None
        assert "logger exited unexpectedly with code -9" in mesh.text()


def test_a_killed_provider_worker_is_back_and_the_breaker_recovers(tmp_path: Path) -> None:
    # A short cool-down: the breaker's recovery is what is under test, not its default wait.
    with launched(tmp_path, router={"breaker_cooldown_s": 2.0}) as mesh:
        assert _chat(mesh, "warm") == 200
        _kill_one(mesh, "--worker")
        # While it is down the router's only endpoint fails: 5xx, and its breaker opens.
        failed = [_chat(mesh, f"down-{i}") for i in range(5)]
        assert any(code >= 500 for code in failed), failed
        if all(code >= 500 for code in failed):
            # Five failures in a row, past the threshold of 3 (unless the worker came back).
            # Open, or already half-open if the 2 s cool-down passed on a loaded machine.
            (state,) = _endpoints(mesh)
            assert state.circuit_state in (
                router_pb2.CIRCUIT_STATE_OPEN,
                router_pb2.CIRCUIT_STATE_HALF_OPEN,
            ), state
        poll(lambda: _back(mesh, "provider:sim", 1), 30, "the provider worker restarted")
        # The breaker half-opens after its cool-down and closes on the first success.
        poll(lambda: True if _chat(mesh, "probe") == 200 else None, 30, "a request served")
        assert [_chat(mesh, f"after-{i}") for i in range(10)] == [200] * 10
        # Closed by the successes; healthy again at the router's next probe.
        poll(
            lambda: (
                True
                if [(e.circuit_state, e.healthy) for e in _endpoints(mesh)]
                == [(router_pb2.CIRCUIT_STATE_CLOSED, True)]
                else None
            ),
            30,
            "the endpoint closed and healthy",
        )
        assert mesh.proc.poll() is None


def test_a_service_that_keeps_crashing_is_named_and_stops_the_mesh(tmp_path: Path) -> None:
    with launched(tmp_path, "--max-restarts", "1", "--restart-window", "120") as mesh:
        _kill_one(mesh, "hybridinference.router")
        poll(lambda: _back(mesh, "router", 1), 30, "the router restarted")
        assert _chat(mesh, "served-after-restart") == 200
        children = descendants(mesh.proc.pid)
        _kill_one(mesh, "hybridinference.router")
        assert mesh.proc.wait(timeout=30) == 1, mesh.text()
        text = mesh.text()
        assert "router exited unexpectedly with code -9" in text
        assert "it crashed 2 times within 120s: giving up on it and stopping the mesh" in text
        assert "launcher: stopped" in text
        assert [pid for pid in children if alive(pid)] == []


def test_a_killed_envoy_is_back_and_serves(tmp_path: Path) -> None:
    with launched(tmp_path) as mesh:
        (envoy,) = [
            pid
            for pid in descendants(mesh.proc.pid)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"envoy")
        ]
        os.kill(envoy, signal.SIGKILL)
        poll(lambda: _back(mesh, "envoy", 1), 30, "Envoy restarted")
        assert _chat(mesh, "after-envoy") == 200
