"""Records a client cannot forge or keep out, against the mesh `make up` runs (Envoy in front)."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.launched import Mesh, launched
from support.polling import poll
from support.records import records_sent_as


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


def _typed_chat(mesh: Mesh, request_id: str, request: gateway_pb2.ChatRequest) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.envoy_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            stub.Chat(request, metadata=(("x-request-id", request_id),), timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("nul-user", {"user": "a\x00b"}, "user"),
        ("long-stop", {"stop": ["x" * 1100]}, "stop"),
        ("nul-stop", {"stop": "a\x00"}, "stop"),
    ],
)
def test_a_refused_request_still_leaves_a_row(
    mesh: Mesh, name: str, body: dict[str, Any], field: str
) -> None:
    """The gateway refuses what the logger could not store (400 naming the field), and the refused
    request still leaves a row (its status says why): before, these were served and left none."""
    assert chat(mesh, name, **body) == 400
    (record,) = stored(mesh, name)
    assert record.status == "INVALID_ARGUMENT"
    assert field in record.error


def test_the_typed_surface_keeps_the_fields_it_can_and_cuts_the_rest(mesh: Mesh) -> None:
    """On gRPC the request's fields reach the record before validation: a NUL-laden user, a
    1,100-character stop sequence and oversized metadata are cut, not a reason to lose the row."""
    request = gateway_pb2.ChatRequest(
        model="hi-sim",
        messages=[chat_pb2.ChatMessage(role="user", content="p" * 500_000)],
        user="a\x00b",
        sampling=chat_pb2.SamplingParams(stop=["x" * 1100]),
        metadata={f"key-{i}": "\U0001f600" * 3000 for i in range(40)},
    )
    assert _typed_chat(mesh, "typed-huge", request) == grpc.StatusCode.INVALID_ARGUMENT
    (record,) = stored(mesh, "typed-huge")
    assert record.user == "ab"
    assert list(record.sampling.stop) == ["x" * 1024]
    assert record.ByteSize() <= 64 * 1024
