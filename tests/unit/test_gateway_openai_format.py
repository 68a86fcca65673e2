"""The bytes the OpenAI surface writes parse as the official SDK's own response types."""

from __future__ import annotations

import grpc
import orjson
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from hybridinference.common.errors import UPSTREAM_DISCONNECTED, ServiceError, stream_cut_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway import openai_format as fmt
from hybridinference.router.v1 import router_pb2

COMPLETION = router_pb2.Completion(
    usage=chat_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    finish_reason=chat_pb2.FINISH_REASON_LENGTH,
)


def frames(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n\n")
    parts = data[:-2].split(b"\n\n")
    assert all(part.startswith(b"data: ") for part in parts)
    return [part[len(b"data: ") :] for part in parts]


def test_chat_completion_is_an_sdk_chat_completion() -> None:
    body = fmt.chat_completion("rid", 1700000000, "served", 'he said "hi"\n', COMPLETION)
    parsed = ChatCompletion.model_validate_json(body)
    assert parsed.id == "chatcmpl-rid"
    assert parsed.choices[0].message.content == 'he said "hi"\n'
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.total_tokens == 5


def test_stream_frames_are_sdk_chunks_ending_in_done() -> None:
    writer = fmt.ChunkWriter("rid", 1700000000, "served", include_usage=False)
    data = (
        writer.role()
        + writer.content("Hel")
        + writer.content("lo \u00e9")
        + writer.finish(COMPLETION)
    )
    payloads = frames(data)
    assert payloads[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello \u00e9"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_include_usage_adds_a_final_usage_chunk_with_no_choices() -> None:
    writer = fmt.ChunkWriter("rid", 1, "served", include_usage=True)
    payloads = frames(writer.role() + writer.content("x") + writer.finish(COMPLETION))
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])
    # Every chunk but the last carries "usage": null, as OpenAI sends it.
    assert all(b'"usage":null' in p for p in payloads[:-2])


def test_models() -> None:
    listing = orjson.loads(fmt.model_list([("a", "me"), ("b", "you")], 5))
    assert listing["object"] == "list"
    assert [Model.model_validate(m).id for m in listing["data"]] == ["a", "b"]


def test_error_frame_carries_openai_error() -> None:
    error = ServiceError(grpc.StatusCode.UNAVAILABLE, "provider went away", "provider_unavailable")
    (payload,) = frames(fmt.error_frame(error))
    assert orjson.loads(payload)["error"] == {
        "message": "provider went away",
        "type": "api_error",
        "param": None,
        "code": "provider_unavailable",
    }


def test_stream_cut_by_a_dead_upstream_names_no_address() -> None:
    raw = ServiceError(
        grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed) ipv4:10.0.0.7:50053"
    )
    cut = stream_cut_error(raw, 3)
    (payload,) = frames(fmt.error_frame(cut))
    error = orjson.loads(payload)["error"]
    assert error["code"] == UPSTREAM_DISCONNECTED
    assert error["type"] == "api_error"
    assert "3 tokens" in error["message"]
    assert "Socket" not in error["message"] and "10.0.0.7" not in error["message"]


def test_stream_cut_by_the_deadline_is_a_timeout() -> None:
    cut = stream_cut_error(ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline"), 0)
    assert cut.reason == "timeout"
    assert cut.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_stream_error_a_client_can_act_on_is_kept() -> None:
    quota = ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "tokens per minute", "quota_exceeded")
    assert stream_cut_error(quota, 5) is quota
