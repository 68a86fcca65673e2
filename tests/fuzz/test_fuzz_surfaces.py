"""Random and invalid input against the mesh's public surfaces: never a 5xx, nothing crashes.

Bounded (a fixed number of examples, no shrinking deadline) so it runs in CI in well under a
minute. Each surface is fuzzed through Envoy, as clients reach it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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


# The rich chat surface: near-valid tools, schemas, parts, tool calls and options, mixed with junk.
names = st.sampled_from(["get_weather", "f", "", "bad name!", "x" * 70]) | json_scalars
schemas = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "string", "integer", "array", "banana"])
            | json_scalars,
            "enum": st.lists(json_scalars, max_size=3) | json_scalars,
            "minimum": st.integers(-5, 5),
            "required": st.lists(st.text(max_size=4), max_size=2) | json_scalars,
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {"type": st.just("object")},
        optional={
            "properties": st.dictionaries(st.text(max_size=6), inner, max_size=3) | json_scalars,
            "items": inner | json_scalars,
            "anyOf": st.lists(inner, max_size=2) | json_scalars,
            "$defs": st.dictionaries(st.text(max_size=4), inner, max_size=2),
            "$ref": st.sampled_from(["#/$defs/a", "#/nope", "http://x"]) | json_scalars,
        },
    ),
    max_leaves=8,
)
tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "retrieval"]) | json_scalars},
        optional={
            "function": st.fixed_dictionaries(
                {"name": names},
                optional={"parameters": schemas | json_values, "strict": json_scalars},
            )
            | json_scalars
        },
    ),
    max_size=3,
)
parts = st.lists(
    st.sampled_from(
        [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "ftp://x", "detail": "huge"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "file", "file": {}},
            {"type": "refusal", "refusal": "no"},
            {"type": "video"},
        ]
    )
    | json_values,
    max_size=3,
)
rich_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": st.text(max_size=20) | parts | st.none(),
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {"id": st.sampled_from(["call_1", "", "call_2"]), "type": st.just("function")},
                    optional={
                        "function": st.fixed_dictionaries(
                            {"name": names, "arguments": json_scalars}
                        )
                    },
                ),
                max_size=2,
            )
            | json_scalars,
            "tool_call_id": st.sampled_from(["call_1", "call_9", ""]) | json_scalars,
            "name": json_scalars,
            "reasoning_content": json_scalars,
        },
    ),
    min_size=1,
    max_size=4,
)
rich_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["hi-sim", "hi-plain"]), "messages": rich_messages},
    optional={
        "tools": tools | json_scalars,
        "tool_choice": st.sampled_from(
            [
                "none",
                "auto",
                "required",
                "sometimes",
                {"type": "function", "function": {"name": "f"}},
            ]
        )
        | json_values,
        "parallel_tool_calls": json_scalars,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_object", "json_schema", "yaml"])},
            optional={
                "json_schema": st.fixed_dictionaries(
                    {"name": names},
                    optional={"schema": schemas | json_values, "strict": json_scalars},
                )
                | json_scalars
            },
        )
        | json_scalars,
        "n": st.integers(-1, 3) | json_scalars,
        "logprobs": json_scalars,
        "top_logprobs": st.integers(-1, 25) | json_scalars,
        "logit_bias": st.dictionaries(
            st.sampled_from(["1", "x", "99999999999"]), json_scalars, max_size=2
        )
        | json_scalars,
        "reasoning_effort": st.sampled_from(["low", "high", "extreme"]) | json_scalars,
        "service_tier": json_scalars,
        "metadata": json_values,
        "top_k": json_scalars,
        "min_p": json_scalars,
        "structured_outputs": json_values,
        "guided_json": json_values,
        "extra_body": json_values,
        "frobnicate": json_scalars,
        "store": json_scalars,
        "stream": st.booleans(),
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
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def assert_not_5xx(reply: httpx.Response, body: bytes) -> None:
    assert reply.status_code < 500, (reply.status_code, body[:300])


@FUZZ
@given(body=chat_bodies)
def test_openai_chat_structured(mesh: Mesh, client: httpx.Client, body: dict[str, Any]) -> None:
    content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"{}"
    assert_not_5xx(_send(client, f"{mesh.http_url}/v1/chat/completions", content), content)


@FUZZ
@given(body=rich_bodies)
def test_openai_chat_rich(mesh: Mesh, client: httpx.Client, body: dict[str, Any]) -> None:
    """Tools, schemas, parts, tool calls and options: a 2xx, or a 4xx naming the field."""
    content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"{}"
    with client.stream(
        "POST",
        f"{mesh.http_url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    ) as reply:
        data = reply.read()
    assert_not_5xx(reply, content)
    if reply.status_code == 400:
        error = orjson.loads(data)["error"]
        assert error["param"] or error["code"] == "invalid_json", (error, content[:300])
    elif reply.status_code == 200 and not body.get("stream"):
        assert orjson.loads(data)["choices"], content[:300]


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
