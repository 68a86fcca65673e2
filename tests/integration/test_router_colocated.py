"""The real router process hosting a provider worker in-process next to a remote worker process:
streams, whole replies, fallback from a failing colocated endpoint, deadlines and the endpoint
view all work as with a worker process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hybridinference.router.v1 import router_pb2
from support.polling import poll
from support.sim_mesh import SimMesh, endpoint, request

FAST = {"ttft_ms": 2, "itl_ms": 1, "output_tokens": 4}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[SimMesh]:
    mesh = SimMesh(
        tmp_path,
        workers={
            "local": [
                endpoint("a", **FAST),
                endpoint("broken", **FAST, fail_rate=1.0),
                endpoint("slow", ttft_ms=2, itl_ms=200, output_tokens=50),
            ],
            "remote": [endpoint("b", **FAST)],
        },
        models=[
            {"name": "m", "endpoints": ["a", "b"]},
            {"name": "broken-first", "endpoints": ["broken", "b"]},
            {"name": "slow", "endpoints": ["slow"]},
        ],
        colocated=frozenset({"local"}),
    )
    try:
        yield mesh
    finally:
        mesh.close()


def test_only_the_remote_worker_runs_as_a_process(mesh: SimMesh) -> None:
    assert set(mesh.workers) == {"remote"}

    def all_healthy() -> dict[str, router_pb2.EndpointState] | None:
        states = mesh.endpoints()
        return states if all(s.healthy for s in states.values()) else None

    states = poll(all_healthy, 10.0, "every endpoint healthy")
    assert states["a"].worker_address == "colocated:local"
    assert states["b"].worker_address == f"127.0.0.1:{mesh.ports['remote']}"


def test_streams_and_whole_replies_come_from_both_kinds_of_worker(mesh: SimMesh) -> None:
    served = set()
    for _ in range(4):
        responses = mesh.route("m")
        assert responses[-1].completion.usage.completion_tokens == 4
        served.add(responses[0].selection.endpoint)
        unary = mesh.stub.RouteUnary(router_pb2.RouteUnaryRequest(request=request("m")), timeout=5)
        assert unary.content == "".join(r.delta for r in responses)
        served.add(unary.selection.endpoint)
    assert served == {"a", "b"}


def test_a_failing_colocated_endpoint_falls_back_to_the_remote_one(mesh: SimMesh) -> None:
    # Round robin puts "broken" first for every other request; those fall back to "b".
    attempts = []
    for _ in range(4):
        responses = mesh.route("broken-first")
        assert responses[0].selection.endpoint == "b"
        assert responses[-1].HasField("completion")
        attempts.append(responses[0].selection.attempts)
    assert sorted(attempts) == [1, 1, 2, 2]
    assert mesh.endpoints()["broken"].failures_total == 2


def test_deadline_on_a_colocated_stream(mesh: SimMesh) -> None:
    with pytest.raises(grpc.RpcError) as error:
        mesh.route("slow", timeout=0.5)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The generation was stopped with the call: nothing stays in flight in the router.
    poll(
        lambda: True if mesh.endpoints()["slow"].in_flight == 0 else None,
        5.0,
        "the slow endpoint to have nothing in flight",
    )
