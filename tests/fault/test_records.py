"""Records a client cannot forge or keep out, against the mesh `make up` runs (Envoy in front)."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.launched import Mesh, launched
from support.records import records_sent_as
from support.polling import poll


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with launched(tmp_path_factory.mktemp("records")) as running:
        yield running


def chat(mesh: Mesh, request_id: str, **body: Any) -> int:
    payload = {"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]} | body
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.envoy_port}/v1/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json", "x-request-id": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def stored(mesh: Mesh, request_id: str, count: int = 1) -> list[Any]:
    logger = f"127.0.0.1:{mesh.logger_port}"
    return poll(
        lambda: found if len(found := records_sent_as(logger, request_id)) >= count else None,
        15,
        f"{count} record(s) of {request_id}",
    )


def test_two_requests_with_one_client_id_are_two_rows_and_two_usage_entries(mesh: Mesh) -> None:
    assert chat(mesh, "same-id") == 200
    assert chat(mesh, "same-id") == 200
    records = stored(mesh, "same-id", 2)
    assert len(records) == 2
    assert len({r.request_id for r in records}) == 2
    assert all(r.request_id != "same-id" for r in records)
    with sqlite3.connect(mesh.db_path) as db:
        rows = db.execute(
            "SELECT count(*) FROM request_log WHERE client_request_id = 'same-id'"
        ).fetchone()
        usage = db.execute("SELECT sum(requests) FROM usage_hourly").fetchone()
    assert rows == (2,)
    # Every request of this module is in the rollup, these two among them.
    with sqlite3.connect(mesh.db_path) as db:
        total = db.execute("SELECT count(*) FROM request_log").fetchone()
    assert usage == total
