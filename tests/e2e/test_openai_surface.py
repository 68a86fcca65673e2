"""The OpenAI-compatible surface through Envoy, as the official SDK and raw HTTP clients see it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from support.mesh import Mesh
from support.polling import poll
from support.records import get_record

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def post(
    http: httpx.Client,
    mesh: Mesh,
    body: bytes | dict[str, object],
    path: str = "/v1/chat/completions",
    **headers: str,
) -> httpx.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(
        mesh.http_url + path, content=data, headers={"content-type": "application/json", **headers}
    )


def test_non_stream_completion_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="hi-sim", messages=HELLO)
    assert reply.object == "chat.completion"
    assert reply.model == "hi-sim-1"
    content = reply.choices[0].message.content
    assert content and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12 == len(content.split())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12


def test_stream_matches_non_stream_and_reports_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="hi-sim", messages=HELLO)
    stream = client.chat.completions.create(
        model="hi-sim",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_option_has_no_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="hi-sim", messages=HELLO, stream=True)
    assert all(chunk.usage is None for chunk in stream)


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="hi-sim", messages=HELLO, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"hi-sim", "hi-slow", "hi-dying"}
    assert client.models.retrieve("hi-sim").id == "hi-sim"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "nope" in caught.value.message


def test_sdk_sees_bad_request_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="hi-sim", messages=[])
    assert caught.value.param == "messages"


def test_raw_sse_bytes(http: httpx.Client, mesh: Mesh) -> None:
    reply = post(http, mesh, {"model": "hi-sim", "messages": HELLO, "stream": True})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers.get("x-request-id")
    frames = reply.content.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    for frame in frames[:-2]:
        assert frame.startswith(b"data: {")
        assert orjson.loads(frame[6:])["object"] == "chat.completion.chunk"


def test_client_request_id_is_echoed(http: httpx.Client, mesh: Mesh) -> None:
    reply = post(
        http, mesh, {"model": "hi-sim", "messages": HELLO}, **{"x-request-id": "my-req-42"}
    )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "my-req-42"
    assert orjson.loads(reply.content)["id"] == "chatcmpl-my-req-42"


def test_generated_request_id_is_in_the_response_and_the_body(
    http: httpx.Client, mesh: Mesh
) -> None:
    reply = post(http, mesh, {"model": "hi-sim", "messages": HELLO})
    assert reply.status_code == 200
    assert orjson.loads(reply.content)["id"] == f"chatcmpl-{reply.headers['x-request-id']}"
    assert reply.headers.get_list("x-request-id") == [reply.headers["x-request-id"]]


def test_request_id_unsafe_to_log_is_refused(http: httpx.Client, mesh: Mesh) -> None:
    for unsafe in ("x" * 129, "id with spaces"):
        reply = post(http, mesh, {"model": "hi-sim", "messages": HELLO}, **{"x-request-id": unsafe})
        assert reply.status_code == 400
        error = orjson.loads(reply.content)["error"]
        assert error["param"] == "x-request-id" and "1-128 characters" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b'{"model": "hi-sim", "messages": [', 400, None, "invalid_json"),
        ({"model": "hi-sim", "messages": []}, 400, "messages", "invalid_request"),
        ({"model": "hi-sim", "messages": HELLO, "max_tokens": -1}, 400, "max_tokens", None),
        ({"model": "hi-sim", "messages": HELLO, "max_tokens": 10**9}, 400, "max_tokens", None),
        ({"model": "nope", "messages": HELLO}, 404, "model", "model_not_found"),
        ({"model": "nope", "messages": HELLO, "stream": True}, 404, "model", "model_not_found"),
    ],
)
def test_bad_input_gets_openai_error(
    http: httpx.Client,
    mesh: Mesh,
    body: bytes | dict[str, object],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    reply = post(http, mesh, body)
    assert reply.status_code == status, reply.content
    error = orjson.loads(reply.content)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert error["message"]


def test_body_over_gateway_limit_is_413_naming_it(http: httpx.Client, mesh: Mesh) -> None:
    big = {"model": "hi-sim", "messages": [{"role": "user", "content": "x" * (16 << 20)}]}
    reply = post(http, mesh, big)
    assert reply.status_code == 413
    error = orjson.loads(reply.content)["error"]
    assert error["code"] == "request_too_large" and "gateway.max_body_bytes" in error["message"]


def test_long_message_is_400_naming_it(http: httpx.Client, mesh: Mesh) -> None:
    big = {"model": "hi-sim", "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    reply = post(http, mesh, big)
    assert reply.status_code == 400
    assert orjson.loads(reply.content)["error"]["param"] == "messages[0].content"


def test_body_over_envoy_limit_is_413_not_buffered(http: httpx.Client, mesh: Mesh) -> None:
    # Envoy's limit is the gateway's plus 1 MiB of headroom.
    reply = post(http, mesh, b"x" * (20 << 20))
    assert reply.status_code == 413


def test_provider_dying_mid_stream_gives_error_event_and_no_done(
    http: httpx.Client, mesh: Mesh
) -> None:
    reply = post(http, mesh, {"model": "hi-dying", "messages": HELLO, "stream": True})
    frames = [f for f in reply.content.split(b"\n\n") if f]
    # No [DONE]: a client that skips error events must not take the cut answer as complete.
    assert b"data: [DONE]" not in frames
    error = orjson.loads(frames[-1][6:])["error"]
    assert error["type"] == "api_error" and error["code"] == "upstream_disconnected"
    # The sim's endpoint aborts after 3 tokens; the message says so and names nothing internal.
    assert "after 3 tokens" in error["message"] and "sim-dying" not in error["message"]
    tokens = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert sum(1 for t in tokens if t["choices"][0]["delta"].get("content")) == 3
    request_id = reply.headers["x-request-id"]
    record = poll(lambda: get_record(mesh, request_id), timeout_s=10, what="the cut record")
    assert record.status == "UNAVAILABLE"
    assert record.error.startswith("stream cut after 3 tokens: ")
    assert record.usage.completion_tokens == 3


def test_provider_dying_without_stream_is_503(http: httpx.Client, mesh: Mesh) -> None:
    reply = post(http, mesh, {"model": "hi-dying", "messages": HELLO})
    assert reply.status_code == 503
    assert orjson.loads(reply.content)["error"]["message"]
