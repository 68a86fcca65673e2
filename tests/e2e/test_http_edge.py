"""The HTTP edge (Envoy's edge policy plus the gateway): every odd request gets an HTTP answer in
its path's dialect, at once, and the README's table says which (support/edge_cases.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import edge_cases
from support.edge_cases import CASES, EdgeCase
from support.mesh import Mesh, mesh_config, running_mesh
from support.raw_http import send

# Short enough that the slow-client rows answer quickly; the defaults are 10 s and 30 s.
HEADERS_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("edge")
    config = mesh_config(tmp)
    config["envoy"]["request_headers_timeout_s"] = HEADERS_TIMEOUT_S
    config["envoy"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    with running_mesh(tmp, config) as running:
        yield running


def test_readme_table_is_the_tested_table() -> None:
    readme = edge_cases.README.read_text()
    expected = edge_cases.render_table()
    assert edge_cases.readme_table(readme) == expected, (
        "README's edge table differs from support/edge_cases.py; regenerate it with "
        "`python -m support.edge_cases`:\n" + expected
    )


@pytest.mark.parametrize("case", CASES, ids=[c.sent[:60] for c in CASES])
def test_client_sent_x_gets_status_y_and_code_z(mesh: Mesh, case: EdgeCase) -> None:
    for raw in case.requests:
        reply = send(
            mesh.envoy_port,
            raw,
            timeout_s=REQUEST_TIMEOUT_S + 8,
            close_wait_s=2.0 if case.closes else 0.0,
        )
        what = f"{raw[:60]!r} → {reply.status} {reply.body[:300]!r}"
        assert reply.status == case.status, what
        if case.allow is not None:
            assert reply.header("allow") == case.allow, what
        if case.closes:
            assert reply.closed, f"connection left open: {what}"
        # Answered at once: only the slow-client rows wait, for the edge's own timeouts.
        assert reply.seconds < REQUEST_TIMEOUT_S + 2, what
        grpc_status = reply.trailers.get("grpc-status", reply.header("grpc-status") or "0")
        assert grpc_status == "0", f"gRPC error in a trailer of an HTTP answer: {what}"
        if raw.startswith(b"HEAD "):
            continue
        if case.code:
            assert edge_cases.error_code(case, reply) == case.code, what
        else:
            assert reply.body, f"empty 2xx body: {what}"
