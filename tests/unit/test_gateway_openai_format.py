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
    reply = router_pb2.RouteUnaryResponse(content='he said "hi"\n')
    body = fmt.chat_completion("rid", 1700000000, "served", reply, COMPLETION)
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
    routes = [
        router_pb2.ModelRoute(
            name="a",
            owned_by="me",
            capabilities=chat_pb2.ModelCapabilities(tools=True, input_modalities=["text"]),
        ),
        router_pb2.ModelRoute(name="b", owned_by="you"),
    ]
    listing = orjson.loads(fmt.model_list(routes, 5))
    assert listing["object"] == "list"
    assert [Model.model_validate(m).id for m in listing["data"]] == ["a", "b"]
    assert listing["data"][0]["capabilities"]["tools"] is True
    assert listing["data"][1]["capabilities"]["tools"] is False


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


def test_rich_whole_reply_is_an_sdk_chat_completion() -> None:
    call = chat_pb2.ToolCall(
        id="call_1", type="function", function=chat_pb2.FunctionCall(name="f", arguments="{}")
    )
    logprobs = chat_pb2.Logprobs(
        content=[
            chat_pb2.TokenLogprob(
                token="a",
                logprob=-0.5,
                bytes=b"a",
                top_logprobs=[chat_pb2.TopLogprob(token="a", logprob=-0.5)],
            )
        ]
    )
    reply = router_pb2.RouteUnaryResponse(
        choices=[
            chat_pb2.Choice(
                index=0,
                message=chat_pb2.ChatMessage(
                    role="assistant", tool_calls=[call], reasoning_content="hmm"
                ),
                finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS,
            ),
            chat_pb2.Choice(
                index=1,
                message=chat_pb2.ChatMessage(role="assistant", content="a"),
                finish_reason=chat_pb2.FINISH_REASON_STOP,
                logprobs=logprobs,
            ),
        ]
    )
    completion = router_pb2.Completion(
        usage=chat_pb2.Usage(completion_tokens=9, reasoning_tokens=4, cached_tokens=2)
    )
    body = fmt.chat_completion("rid", 1, "served", reply, completion)
    parsed = ChatCompletion.model_validate_json(body)
    first, second = parsed.choices
    assert first.finish_reason == "tool_calls" and first.message.content is None
    assert first.message.tool_calls is not None
    assert first.message.tool_calls[0].function.name == "f"  # type: ignore[union-attr]
    assert orjson.loads(body)["choices"][0]["message"]["reasoning_content"] == "hmm"
    assert second.logprobs is not None and second.logprobs.content is not None
    assert second.logprobs.content[0].bytes == [97]
    usage = parsed.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 4
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 2


def test_rich_stream_events_are_sdk_chunks() -> None:
    writer = fmt.ChunkWriter("rid", 1, "served", include_usage=False)
    events = [
        router_pb2.RouteResponse(reasoning="think"),
        router_pb2.RouteResponse(
            tool_calls=[chat_pb2.ToolCallDelta(index=0, id="c1", type="function", name="f")]
        ),
        router_pb2.RouteResponse(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments='{"a"')]),
        router_pb2.RouteResponse(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments=":1}")]),
        router_pb2.RouteResponse(finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS),
        router_pb2.RouteResponse(index=1, delta="x"),
        router_pb2.RouteResponse(index=1, finish_reason=chat_pb2.FINISH_REASON_STOP),
    ]
    data = writer.role() + b"".join(writer.event(e) for e in events)
    data += writer.finish(router_pb2.Completion(finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS))
    payloads = frames(data)
    assert payloads[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    raw = [orjson.loads(p) for p in payloads[:-1]]
    assert any(r["choices"][0]["delta"].get("reasoning_content") == "think" for r in raw)
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in chunks
        if c.choices[0].delta.tool_calls
    )
    assert arguments == '{"a":1}'
    finishes = [(c.choices[0].index, c.choices[0].finish_reason) for c in chunks]
    assert (0, "tool_calls") in finishes and (1, "stop") in finishes
    # Each choice finishes once, and choice 1 announced its role first.
    assert sum(1 for f in finishes if f[1] is not None) == 2
    roles = [c.choices[0].index for c in chunks if c.choices[0].delta.role == "assistant"]
    assert roles == [0, 1]
