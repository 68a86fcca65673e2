"""Envoy sheds load instead of falling over: the overload manager and the connection limit.

The mesh's Envoy gets a heap limit below what it already uses (so the overload manager is at
full pressure from the start and sheds every request) and a limit of a few connections.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll

MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def shedding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp("overload")
    config = mesh_config(tmp)
    config["envoy"].update(max_heap_mb=1, max_connections=MAX_CONNECTIONS)
    with running_mesh(tmp, config, serving_through_envoy=False) as mesh:
        # The heap monitor samples every refresh_interval (0.25 s): on a loaded machine the first
        # request can beat the first sample, so wait until Envoy says the shedding action is on.
        poll(
            lambda: _stop_accepting_requests(config["envoy"]["admin_port"]) or None,
            30,
            "Envoy's stop_accepting_requests overload action active",
            every_s=0.1,
        )
        yield mesh


def _stop_accepting_requests(admin_port: int) -> bool:
    stat = "overload.envoy.overload_actions.stop_accepting_requests.active"
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^{stat}$"
    with urllib.request.urlopen(url, timeout=1) as reply:
        return f"{stat}: 1" in reply.read().decode()


def test_shed_requests_get_503_with_retry_after_in_each_dialect(shedding: Mesh) -> None:
    body = {"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=shedding.http_url, timeout=10) as client:
        openai_style = client.post("/v1/chat/completions", json=body)
        typed = client.get("/api/v1/models")
    for reply in (openai_style, typed):
        assert reply.status_code == 503, reply.text
        assert reply.headers["retry-after"] == "1"
    assert openai_style.json()["error"]["code"] == "overload"
    assert openai_style.json()["error"]["type"] == "server_error"
    assert typed.json()["code"] == 14  # UNAVAILABLE, as google.rpc.Status JSON
    assert "overload" in typed.json()["message"]


def _closed_at_once(conn: socket.socket) -> bool:
    """True when the peer closes the connection without a word (within a second)."""
    conn.settimeout(1.0)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False  # still open, waiting for a request
    except ConnectionResetError:
        return True


def _active_connections(mesh: Mesh) -> int:
    admin = mesh.config["envoy"]["admin_port"]
    # The public listener's connection manager ("ingress"), not the admin one serving this.
    stats = httpx.get(
        f"http://127.0.0.1:{admin}/stats",
        params={"filter": r"^http\.ingress\.downstream_cx_active$"},
        timeout=5,
    ).text
    (line,) = stats.split()[-1:]
    return int(line)


def test_connections_beyond_the_limit_are_closed_and_room_comes_back(shedding: Mesh) -> None:
    address = ("127.0.0.1", shedding.envoy_port)
    # Connections of earlier tests count until Envoy has read their close.
    poll(lambda: _active_connections(shedding) == 0 or None, 10, "no connection left open")
    with ExitStack() as held:
        conns = [held.enter_context(socket.create_connection(address)) for _ in range(3)]
        assert not any(_closed_at_once(conn) for conn in conns)
        with socket.create_connection(address) as extra:
            assert _closed_at_once(extra)
        conns[0].close()
        # Envoy counts the closed connection out as soon as it reads the close.
        poll(lambda: _stays_open(address) or None, 10, "room for a new connection")


def _stays_open(address: tuple[str, int]) -> bool:
    with socket.create_connection(address) as conn:
        return not _closed_at_once(conn)
