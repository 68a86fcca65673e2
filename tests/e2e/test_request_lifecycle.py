"""Cancellation down to the provider, and the one record every request leaves in the logger."""

from __future__ import annotations

import time

import grpc
import httpx
import orjson
import pytest

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from support.mesh import Mesh
from support.polling import poll
from support.records import get_record

HELLO = [chat_pb2.ChatMessage(role="user", content="hello there")]


def cancelled_total(mesh: Mesh, endpoint: str) -> int:
    with grpc.insecure_channel(mesh.worker_address("sim")) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        reply = stub.GetStatus(provider_pb2.GetStatusRequest(endpoint=endpoint), timeout=5)
    return int(reply.endpoints[0].cancelled_total)


def test_grpc_client_cancel_reaches_the_provider_within_a_second(mesh: Mesh) -> None:
    before = cancelled_total(mesh, "sim-slow")
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        call = stub.ChatStream(gateway_pb2.ChatStreamRequest(model="hi-slow", messages=HELLO))
        next(call)  # generation is under way
        call.cancel()
        cancelled_at = time.monotonic()
    poll(lambda: cancelled_total(mesh, "sim-slow") > before or None, 1.0, "provider cancel")
    assert time.monotonic() - cancelled_at < 1.0


def test_http_client_disconnect_reaches_the_provider_within_a_second(mesh: Mesh) -> None:
    before = cancelled_total(mesh, "sim-slow")
    body = orjson.dumps(
        {"model": "hi-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{mesh.http_url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        ) as reply,
    ):
        assert reply.status_code == 200
        next(reply.iter_bytes())
    # Leaving both blocks closed the connection mid-stream.
    disconnected_at = time.monotonic()
    poll(lambda: cancelled_total(mesh, "sim-slow") > before or None, 1.0, "provider cancel")
    assert time.monotonic() - disconnected_at < 1.0


def test_an_abandoned_stream_is_recorded_and_charged_for_what_it_streamed(mesh: Mesh) -> None:
    """The client leaves after a few tokens: no completion ever comes, yet the record carries
    the output tokens the gateway passed on (what the quota settle charges too)."""
    body = orjson.dumps(
        {"model": "hi-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    received = 0
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{mesh.http_url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        ) as reply,
    ):
        request_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if line.startswith("data: ") and orjson.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                received += 1
                if received == 3:
                    break
    record = poll(lambda: get_record(mesh, request_id), 10, "the abandoned stream's record")
    assert record.status == "CANCELLED"
    # At least what the client read; tokens in flight when it left were streamed too.
    assert received <= record.usage.completion_tokens < 200
    assert record.usage.total_tokens == record.usage.completion_tokens
    assert record.error.startswith(f"stream cut after {record.usage.completion_tokens} tokens")


def test_each_request_leaves_one_complete_record(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = stub.Chat(
            gateway_pb2.ChatRequest(
                model="hi-sim", messages=HELLO, user="u-1", metadata={"team": "search"}
            )
        )
    record = poll(lambda: get_record(mesh, reply.id), 10.0, "the request record")
    assert record.status == "OK" and record.surface == "grpc"
    assert record.requested_model == "hi-sim" and record.served_model == "hi-sim-1"
    assert record.provider == "sim" and record.endpoint == "sim-a" and record.attempts == 1
    assert record.usage.completion_tokens == reply.usage.completion_tokens == 12
    assert record.user == "u-1" and dict(record.metadata) == {"team": "search"}
    assert 0 < record.ttft_ms <= record.latency_ms
    # Prices: 1 USD per 1M prompt tokens, 2 USD per 1M completion tokens.
    expected = (reply.usage.prompt_tokens * 1.0 + reply.usage.completion_tokens * 2.0) / 1e6
    assert record.cost_usd == pytest.approx(expected)


def test_rejected_and_failed_requests_are_recorded_too(mesh: Mesh) -> None:
    bad = httpx.post(
        f"{mesh.http_url}/v1/chat/completions", json={"model": "hi-sim", "messages": []}, timeout=30
    )
    missing = httpx.post(
        f"{mesh.http_url}/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    bad_record = poll(lambda: get_record(mesh, bad.headers["x-request-id"]), 10.0, "record")
    missing_record = poll(lambda: get_record(mesh, missing.headers["x-request-id"]), 10.0, "record")
    assert bad_record.status == "INVALID_ARGUMENT" and bad_record.surface == "openai"
    assert missing_record.status == "NOT_FOUND" and missing_record.requested_model == "nope"
    assert "nope" in missing_record.error
