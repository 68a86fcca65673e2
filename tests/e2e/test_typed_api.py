"""The typed API through Envoy: native gRPC (reflection, health) and transcoded HTTP/JSON."""

from __future__ import annotations

import grpc
import httpx
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from hybridinference.common.settings import load_settings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.mesh import Mesh

HELLO = [chat_pb2.ChatMessage(role="user", content="hello there")]


@pytest.fixture(scope="module")
def stub(mesh: Mesh) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(mesh.envoy_grpc))


def test_grpc_stream_through_envoy(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    call = stub.ChatStream(gateway_pb2.ChatStreamRequest(model="hi-sim", messages=HELLO))
    events = list(call)
    text = "".join(e.delta for e in events)
    final = events[-1]
    assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert final.usage.completion_tokens == 12 == len(text.split())
    assert {e.id for e in events} == {final.id} and final.endpoint == "sim-a"
    assert dict(call.trailing_metadata())["x-request-id"] == final.id


def test_grpc_request_id_unsafe_to_log_is_invalid_argument(
    stub: gateway_pb2_grpc.GatewayServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Chat(
            gateway_pb2.ChatRequest(model="hi-sim", messages=HELLO),
            metadata=(("x-request-id", "no spaces allowed"),),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(bad.DESCRIPTOR))
    assert [v.field for v in bad.field_violations] == ["x-request-id"]


def test_grpc_unary_equals_stream(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    reply = stub.Chat(gateway_pb2.ChatRequest(model="hi-sim", messages=HELLO))
    events = list(stub.ChatStream(gateway_pb2.ChatStreamRequest(model="hi-sim", messages=HELLO)))
    assert reply.content == "".join(e.delta for e in events)
    assert reply.usage.total_tokens == events[-1].usage.total_tokens
    assert reply.model == "hi-sim-1"


def test_grpc_invalid_argument_carries_field_violations(
    stub: gateway_pb2_grpc.GatewayServiceStub,
) -> None:
    request = gateway_pb2.ChatRequest(
        model="hi-sim", messages=[], sampling=chat_pb2.SamplingParams(max_tokens=-3)
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert {v.field for v in bad.field_violations} == {"messages", "sampling.max_tokens"}


def test_grpc_unknown_model_is_not_found(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ChatStream(gateway_pb2.ChatStreamRequest(model="nope", messages=HELLO)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_provider_dying_mid_stream_is_unavailable_after_tokens(
    stub: gateway_pb2_grpc.GatewayServiceStub,
) -> None:
    call = stub.ChatStream(gateway_pb2.ChatStreamRequest(model="hi-dying", messages=HELLO))
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for event in call:
            received.append(event)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert received and caught.value.details()


def test_grpc_models(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    models = stub.ListModels(gateway_pb2.ListModelsRequest()).models
    assert {m.id for m in models} == {"hi-sim", "hi-slow", "hi-dying"}
    assert all(list(m.providers) == ["sim"] for m in models)


def test_reflection_lists_services_through_envoy(mesh: Mesh) -> None:
    """What `grpcurl -plaintext host:port list` asks."""
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "hybridinference.gateway.v1.GatewayService",
        "hybridinference.openai.v1.OpenAIService",
        "grpc.health.v1.Health",
    } <= names


def test_http_json_unary(mesh: Mesh) -> None:
    body = {
        "model": "hi-sim",
        "messages": [{"role": "user", "content": "hello there"}],
        "sampling": {"max_tokens": 4},
    }
    reply = httpx.post(f"{mesh.http_url}/api/v1/chat", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["finish_reason"] == "FINISH_REASON_LENGTH"
    assert data["usage"]["completion_tokens"] == 4
    assert reply.headers["x-request-id"] == data["id"]


def test_http_json_stream_is_sse(mesh: Mesh) -> None:
    body = {"model": "hi-sim", "messages": [{"role": "user", "content": "hello there"}]}
    reply = httpx.post(f"{mesh.http_url}/api/v1/chat:stream", json=body, timeout=30)
    assert reply.status_code == 200
    frames = [f for f in reply.content.split(b"\n\n") if f]
    events = [orjson.loads(f.removeprefix(b"data: ")) for f in frames]
    assert events[-1]["usage"]["completion_tokens"] == 12
    assert "".join(e["delta"] for e in events).split().__len__() == 12


def test_http_json_invalid_is_400_with_details(mesh: Mesh) -> None:
    body = {"model": "hi-sim", "messages": []}
    reply = httpx.post(f"{mesh.http_url}/api/v1/chat", json=body, timeout=30)
    assert reply.status_code == 400
    status = reply.json()
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = [d for d in status["details"] if d["@type"].endswith("BadRequest")]
    assert violations[0]["field_violations"][0]["field"] == "messages"


def test_http_json_models(mesh: Mesh) -> None:
    reply = httpx.get(f"{mesh.http_url}/api/v1/models", timeout=30)
    assert reply.status_code == 200
    assert {m["id"] for m in reply.json()["models"]} == {"hi-sim", "hi-slow", "hi-dying"}


def test_grpc_message_over_the_byte_limit_is_refused_unparsed(mesh: Mesh) -> None:
    # gateway.max_message_bytes (default max_body_bytes + 1 MiB): gRPC refuses the message
    # before the gateway reads or parses it, directly and through Envoy alike; the connection
    # keeps serving.
    limit = load_settings(str(mesh.config_path)).gateway.receive_limit_bytes
    huge = [chat_pb2.ChatMessage(role="user", content="x" * (limit + 1024))]
    for target in (mesh.envoy_grpc, mesh.address("gateway")):
        with grpc.insecure_channel(target) as channel:
            direct = gateway_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                direct.Chat(gateway_pb2.ChatRequest(model="hi-sim", messages=huge), timeout=30)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, target
            assert direct.Chat(gateway_pb2.ChatRequest(model="hi-sim", messages=HELLO)).content
