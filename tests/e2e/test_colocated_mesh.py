"""The mesh with the router colocated in the gateway and the provider worker colocated in the
router: one Python process on the data path behind Envoy, the same behaviour at the edges —
the official SDK, errors, mid-stream failures, client cancellation reaching the adapter, request
records, and the provider and router metrics on the gateway's /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import free_port
from support.records import record_sent_as

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello colocated"}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp("colocated")
    config = mesh_config(tmp)
    config["router"]["colocated"] = True
    config["providers"][0]["colocated"] = True
    config["gateway"]["metrics_port"] = free_port()
    with running_mesh(tmp, config) as running:
        yield running


def metric(mesh: Mesh, name: str, **labels: str) -> float:
    port = mesh.config["gateway"]["metrics_port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def cancelled(mesh: Mesh, endpoint: str) -> float:
    return metric(mesh, "hi_provider_generations_total", endpoint=endpoint, outcome="cancelled")


def test_only_the_gateway_runs_between_envoy_and_the_logger(mesh: Mesh) -> None:
    summary = mesh.logs()
    assert "in the gateway" in summary and "in the router" in summary
    # Nothing listens on the router's or the worker's configured port.
    for address in (mesh.address("router"), mesh.worker_address("sim")):
        with pytest.raises(grpc.FutureTimeoutError), grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=0.5)


def test_sdk_stream_and_non_stream_agree(mesh: Mesh) -> None:
    client = openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="hi-sim", messages=HELLO)
    assert whole.model == "hi-sim-1" and whole.usage is not None
    assert whole.usage.completion_tokens == 12
    chunks = list(
        client.chat.completions.create(
            model="hi-sim",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_errors_keep_their_status_and_reason(mesh: Mesh) -> None:
    body = orjson.dumps({"model": "no-such-model", "messages": HELLO})
    reply = httpx.post(
        f"{mesh.http_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 404
    assert orjson.loads(reply.content)["error"]["code"] == "model_not_found"
    dying = httpx.post(
        f"{mesh.http_url}/v1/chat/completions",
        content=orjson.dumps({"model": "hi-dying", "messages": HELLO, "stream": True}),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    frames = [f for f in dying.text.split("\n\n") if f]
    # A cut stream ends with the error event, never [DONE] (README, "The HTTP edge").
    assert "data: [DONE]" not in frames
    assert orjson.loads(frames[-1][6:])["error"]["code"] == "upstream_disconnected"


def test_deadline_and_cancel_reach_the_adapter(mesh: Mesh) -> None:
    before = cancelled(mesh, "sim-slow")
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatStreamRequest(model="hi-slow", messages=[])
        request.messages.add(role="user", content="hi")
        call = stub.ChatStream(request)
        next(call)  # generation is under way
        call.cancel()
        cancelled_at = time.monotonic()
        poll(lambda: cancelled(mesh, "sim-slow") > before or None, 2.0, "adapter cancel")
        assert time.monotonic() - cancelled_at < 2.0
        with pytest.raises(grpc.RpcError) as late:
            list(stub.ChatStream(request, timeout=0.5))
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    poll(lambda: cancelled(mesh, "sim-slow") > before + 1 or None, 2.0, "deadline cancel")


def test_each_request_leaves_a_record_with_the_routing_outcome(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.envoy_grpc) as channel:
        reply = gateway_pb2_grpc.GatewayServiceStub(channel).Chat(
            gateway_pb2.ChatRequest(model="hi-sim", messages=[{"role": "user", "content": "x"}]),
            timeout=10,
        )

    logger = mesh.address("logger")
    stored = poll(lambda: record_sent_as(logger, reply.id), 10.0, "the request record")
    assert (stored.endpoint, stored.provider, stored.served_model) == ("sim-a", "sim", "hi-sim-1")
    assert stored.usage.completion_tokens == 12 and stored.cost_usd > 0
    assert metric(mesh, "hi_provider_generations_total", endpoint="sim-a", outcome="completed")
