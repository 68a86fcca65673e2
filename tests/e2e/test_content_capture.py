"""logger.capture_content through the mesh: with it on, every surface's record holds the prompt
(the messages as JSON) and the response text the client got, cut to capture_max_chars; with it
off (the default), neither is sent nor stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.logger.v1 import logger_pb2
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.records import record_sent_as

MAX_CHARS = 4096
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "héllo, capture me"},
]
PROMPT = json.dumps(MESSAGES, ensure_ascii=False)


@pytest.fixture(scope="module")
def capturing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("capture")
    config = mesh_config(tmp)
    config["logger"] |= {"capture_content": True, "capture_max_chars": MAX_CHARS}
    with running_mesh(tmp, config) as running:
        yield running


def stored(mesh: Mesh, request_id: str) -> logger_pb2.RequestRecord:
    logger = mesh.address("logger")
    record: logger_pb2.RequestRecord = poll(
        lambda: record_sent_as(logger, request_id), 10, f"the record of {request_id}"
    )
    return record


def openai_client(mesh: Mesh) -> OpenAI:
    return OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)


def test_openai_reply_and_stream_are_stored_with_their_prompt(capturing: Mesh) -> None:
    client = openai_client(capturing)
    reply = client.chat.completions.create(
        model="hi-sim", messages=MESSAGES, extra_headers={"x-request-id": "cap-openai-1"}
    )
    text = reply.choices[0].message.content
    assert text
    chunks = client.chat.completions.create(
        model="hi-sim",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-request-id": "cap-openai-2"},
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed
    for request_id, response in (("cap-openai-1", text), ("cap-openai-2", streamed)):
        record = stored(capturing, request_id)
        assert (record.prompt, record.response) == (PROMPT, response)


def test_typed_grpc_reply_and_stream_are_stored_with_their_prompt(capturing: Mesh) -> None:
    messages = [chat_pb2.ChatMessage(role=m["role"], content=str(m["content"])) for m in MESSAGES]
    with grpc.insecure_channel(capturing.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = stub.Chat(
            gateway_pb2.ChatRequest(model="hi-sim", messages=messages),
            metadata=(("x-request-id", "cap-typed-1"),),
            timeout=10,
        )
        events = stub.ChatStream(
            gateway_pb2.ChatStreamRequest(model="hi-sim", messages=messages),
            metadata=(("x-request-id", "cap-typed-2"),),
            timeout=10,
        )
        streamed = "".join(event.delta for event in events)
    assert reply.content and streamed
    for request_id, response in (("cap-typed-1", reply.content), ("cap-typed-2", streamed)):
        record = stored(capturing, request_id)
        assert (record.prompt, record.response) == (PROMPT, response)


def test_a_long_prompt_is_cut_to_the_cap(capturing: Mesh) -> None:
    long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * (2 * MAX_CHARS)}]
    openai_client(capturing).chat.completions.create(
        model="hi-sim", messages=long, extra_headers={"x-request-id": "cap-long"}
    )
    record = stored(capturing, "cap-long")
    assert record.prompt == json.dumps(long)[:MAX_CHARS]


def test_nothing_is_stored_with_capture_off(mesh: Mesh) -> None:
    openai_client(mesh).chat.completions.create(
        model="hi-sim", messages=MESSAGES, extra_headers={"x-request-id": "cap-off"}
    )
    record = stored(mesh, "cap-off")
    assert record.requested_model == "hi-sim"
    assert (record.prompt, record.response) == ("", "")
