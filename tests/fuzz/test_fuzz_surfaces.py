"""Random and invalid input against the mesh's public surfaces: never a 5xx, nothing crashes.

Bounded (a fixed number of examples, no shrinking deadline) so it runs in CI in well under a
minute. Each surface is fuzzed through Envoy, as clients reach it.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.mesh import Mesh
from support.procs import wait_healthy

EXAMPLES = int(os.environ.get("HI_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "developer", "", "robot"])
models = st.sampled_from(["hi-sim", "hi-slow", "nope", "", "x" * 300])
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles | json_scalars, "content": st.text(max_size=60) | json_values}
    ),
    max_size=4,
)
# Bodies near the shape of a real request (reach deep validation), and anything at all.
chat_bodies = st.fixed_dictionaries(
    {"model": models | json_scalars, "messages": messages | json_values},
    optional={
        "max_tokens": st.integers(-5, 2**40) | json_scalars,
        "temperature": st.floats(allow_nan=True) | json_scalars,
        "top_p": st.floats() | json_scalars,
        "stream": st.booleans() | json_scalars,
        "stop": st.lists(st.text(max_size=5), max_size=6) | json_scalars,
        "n": st.integers(-2, 3),
        "seed": st.integers() | json_scalars,
        "stream_options": st.fixed_dictionaries({"include_usage": json_scalars}) | json_scalars,
        "user": st.text(max_size=300) | json_scalars,
    },
)


def _send(client: httpx.Client, url: str, content: bytes) -> httpx.Response:
    # Streams are read to the end but the sim's fast endpoint keeps them short; the slow one is
    # cut off after the status line.
    with client.stream(
        "POST", url, content=content, headers={"content-type": "application/json"}
    ) as reply:
        for _ in reply.iter_bytes():
            break
        return reply


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    return httpx.Client(timeout=30)


def assert_not_5xx(reply: httpx.Response, body: bytes) -> None:
    assert reply.status_code < 500, (reply.status_code, body[:300])


@FUZZ
@given(body=chat_bodies)
def test_openai_chat_structured(mesh: Mesh, client: httpx.Client, body: dict[str, Any]) -> None:
    content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"{}"
    assert_not_5xx(_send(client, f"{mesh.http_url}/v1/chat/completions", content), content)


@FUZZ
@given(body=st.binary(max_size=300) | json_values.map(lambda v: _dumps(v)))
def test_openai_chat_random_bytes(mesh: Mesh, client: httpx.Client, body: bytes) -> None:
    assert_not_5xx(_send(client, f"{mesh.http_url}/v1/chat/completions", body), body)


@FUZZ
@given(body=chat_bodies | json_values)
def test_typed_http_chat(mesh: Mesh, client: httpx.Client, body: Any) -> None:
    content = _dumps(body)
    assert_not_5xx(_send(client, f"{mesh.http_url}/api/v1/chat", content), content)


@FUZZ
@given(model=st.text(max_size=80))
def test_retrieve_model_paths(mesh: Mesh, client: httpx.Client, model: str) -> None:
    reply = client.get(f"{mesh.http_url}/v1/models/{quote(model, safe='')}")
    assert reply.status_code < 500, (reply.status_code, model)


sampling = st.builds(
    chat_pb2.SamplingParams,
    max_tokens=st.integers(-(2**31), 2**31 - 1),
    temperature=st.floats(width=32),
    top_p=st.floats(width=32),
    stop=st.lists(st.text(max_size=4), max_size=6),
    seed=st.integers(-(2**63), 2**63 - 1),
)
grpc_messages = st.lists(
    st.builds(
        chat_pb2.ChatMessage, role=roles, content=st.text(max_size=50), name=st.text(max_size=5)
    ),
    max_size=4,
)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}


@FUZZ
@given(
    model=models,
    messages=grpc_messages,
    sampling=sampling,
    metadata=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=20),
    user=st.text(max_size=300),
)
def test_grpc_chat_random_messages(
    mesh: Mesh,
    model: str,
    messages: list[chat_pb2.ChatMessage],
    sampling: chat_pb2.SamplingParams,
    metadata: dict[str, str],
    user: str,
) -> None:
    request = gateway_pb2.ChatRequest(
        model=model, messages=messages, sampling=sampling, metadata=metadata, user=user
    )
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            stub.Chat(request, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    assert code in ALLOWED, (code, request)


@FUZZ
@given(payload=st.binary(max_size=200))
def test_grpc_garbage_bytes(mesh: Mesh, payload: bytes) -> None:
    """Bytes that are not a valid ChatRequest: refused by gRPC's own parsing, server unharmed."""
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        call = channel.unary_unary(
            "/hybridinference.gateway.v1.GatewayService/Chat",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            call(payload, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    # Undecodable protobuf is INVALID_ARGUMENT (common/wire_guard.py), never UNKNOWN.
    assert code in ALLOWED, code


def test_still_healthy_after_fuzzing(mesh: Mesh, client: httpx.Client) -> None:
    wait_healthy(mesh.envoy_grpc, timeout_s=10)
    assert mesh.proc.poll() is None
    reply = client.post(
        f"{mesh.http_url}/v1/chat/completions",
        content=orjson.dumps({"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]}),
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 200
    assert "Traceback" not in mesh.logs()


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return b"null"
