"""The edge fuzz (tests/fuzz/edge_fuzz.py) against a real mesh: malformed and odd HTTP/1.x
requests across every public path and method, and malformed native gRPC calls, all through
Envoy. `make test` runs a short seeded slice; `make fuzz` (and CI) the full run:
HI_EDGE_FUZZ_HTTP=10000 HI_EDGE_FUZZ_GRPC=2000.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import wait_healthy
from support.records import records_sent_as
from tests.fuzz import edge_fuzz

SEED = int(os.environ.get("HI_EDGE_FUZZ_SEED", "20"))
# The slice `make test` runs (a few seconds); `make fuzz` sets 10,000 and 2,000.
HTTP_REQUESTS = int(os.environ.get("HI_EDGE_FUZZ_HTTP", "1000"))
GRPC_CALLS = int(os.environ.get("HI_EDGE_FUZZ_GRPC", "300"))
WORKERS = 8
# The edge's slow-client timeouts, short so that requests that never finish end quickly.
REQUEST_TIMEOUT_S = 2.0
# No answer within this: the connection was left hanging.
ANSWER_TIMEOUT_S = REQUEST_TIMEOUT_S + 10


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("edge-fuzz")
    config = mesh_config(tmp)
    config["envoy"]["request_headers_timeout_s"] = 1.0
    config["envoy"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    with running_mesh(tmp, config) as running:
        yield running


def _report(problems: list[str]) -> str:
    shown = "\n".join(problems[:15])
    return f"{len(problems)} problems (seed {SEED}; first 15):\n{shown}"


def test_http_edge_fuzz(mesh: Mesh) -> None:
    cases = [edge_fuzz.http_case(SEED, i) for i in range(HTTP_REQUESTS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(
            pool.map(
                lambda c: edge_fuzz.check_http(c, mesh.envoy_port, ANSWER_TIMEOUT_S),
                cases,
            )
        )
    problems = [
        f"#{o.case.index} {o.case.method} {o.case.path[:80]}: {o.problem}"
        for o in outcomes
        if o.problem
    ]
    assert not problems, _report(problems)
    # Every chat request answered 200 left its record in the logger.
    record_ids = [o.record_id for o in outcomes if o.record_id]
    assert "-" not in record_ids, "a 200 without x-request-id"
    logger = mesh.address("logger")

    def missing() -> list[str]:
        # Records are found by the x-request-id the client got back (their key is the gateway's).
        return [request_id for request_id in record_ids if not records_sent_as(logger, request_id)]

    poll(lambda: None if missing() else True, timeout_s=30, what="every 200's record")
    gaps = sum(o.known_gap for o in outcomes)
    print(
        f"edge fuzz: {len(outcomes)} requests, {len(record_ids)} records checked, {gaps} known gap"
    )
    statuses = {o.reply.status for o in outcomes if o.reply is not None}
    # The run reached both sides of the edge: refusals and real answers.
    assert 200 in statuses and 405 in statuses and 400 in statuses, statuses


def test_grpc_edge_fuzz(mesh: Mesh) -> None:
    cases = [edge_fuzz.grpc_case(SEED, i) for i in range(GRPC_CALLS)]
    with grpc.insecure_channel(mesh.envoy_grpc) as channel, ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda c: edge_fuzz.check_grpc(c, channel), cases))
    problems = [f"#{c.index} {r}" for c, r in zip(cases, results, strict=True) if r]
    assert not problems, _report(problems)


def test_every_service_alive_afterwards(mesh: Mesh) -> None:
    assert mesh.proc.poll() is None, "the launcher exited"
    wait_healthy(mesh.envoy_grpc, timeout_s=10)
    for section in ("gateway", "router", "logger"):
        wait_healthy(mesh.address(section), timeout_s=10)
    wait_healthy(mesh.worker_address("sim"), timeout_s=10)
    assert "Traceback" not in mesh.logs()
