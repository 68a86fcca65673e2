"""The gemini adapter (real google-genai SDK) against a wire-faithful fake Gemini API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter, build_adapter
from support.adapter_calls import collect, failure
from support.fakes.gemini_api import GeminiFake
from support.polling import until

KEY = "AIza-test-secret-0001"


@pytest.fixture(scope="module")
def fake() -> Iterator[GeminiFake]:
    yield from GeminiFake.running()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_FAKE_KEY", KEY)
    monkeypatch.setenv("GEMINI_FAKE_KEY_B", "AIza-test-secret-0002")


def make(fake: GeminiFake, model: str = "ok", **options: Any) -> ProviderAdapter:
    settings = ProviderEndpointSettings(
        id="gemini-ep",
        model=model,
        base_url=fake.url,
        api_key_env=options.pop("api_key_env", "GEMINI_FAKE_KEY"),
        **options,
    )
    return build_adapter("gemini", settings)


def request(max_tokens: int | None = None) -> provider_pb2.GenerateRequest:
    sampling = chat_pb2.SamplingParams(temperature=0.5, stop=["END"])
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    return provider_pb2.GenerateRequest(
        request_id="req-g",
        endpoint="gemini-ep",
        messages=[
            chat_pb2.ChatMessage(role="system", content="be brief"),
            chat_pb2.ChatMessage(role="user", content="hello there"),
            chat_pb2.ChatMessage(role="assistant", content="hi"),
            chat_pb2.ChatMessage(role="user", content="again"),
        ],
        sampling=sampling,
    )


async def test_streams_with_roles_system_instruction_and_usage(fake: GeminiFake) -> None:
    events = await collect(make(fake), request(max_tokens=3))
    assert "".join(e.delta for e in events) == "w0 w1 w2"
    assert events[0].model == "ok"
    final = events[-1]
    assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    # Prompt: "hello there" (3) + "hi" (2) + "again" (2) + system "be brief" (3).
    assert final.usage.prompt_tokens == 10
    assert final.usage.completion_tokens == 3
    assert final.usage.total_tokens == 13
    assert final.usage.cached_tokens == 1
    sent = fake.state.requests[-1]
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert sent["generationConfig"]["maxOutputTokens"] == 3
    assert sent["generationConfig"]["stopSequences"] == ["END"]
    assert fake.state.keys[-1] == KEY


async def test_safety_finish_is_content_filter(fake: GeminiFake) -> None:
    events = await collect(make(fake, model="safety"), request())
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER


async def test_429_with_retry_after(fake: GeminiFake) -> None:
    error = await failure(make(fake, model="status-429"), request())
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after_s == 7
    assert error.metadata["retryable"] == "true"


async def test_401_and_500(fake: GeminiFake) -> None:
    unauthenticated = await failure(make(fake, model="status-401"), request())
    assert unauthenticated.code == grpc.StatusCode.UNAVAILABLE
    assert unauthenticated.reason == "upstream_unauthenticated"
    internal = await failure(make(fake, model="status-500"), request())
    assert internal.code == grpc.StatusCode.UNAVAILABLE
    assert internal.reason == "upstream_internal_error"


async def test_first_token_and_idle_timeouts(fake: GeminiFake) -> None:
    first = await failure(make(fake, model="slow-first", first_token_timeout_s=0.3), request())
    assert first.reason == "upstream_first_token_timeout"
    idle = await failure(make(fake, model="stall", idle_timeout_s=0.3), request())
    assert idle.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert idle.reason == "upstream_idle_timeout"


async def test_malformed_chunk_and_disconnect(fake: GeminiFake) -> None:
    malformed = await failure(make(fake, model="malformed"), request())
    assert malformed.reason == "upstream_malformed_response"
    cut = await failure(make(fake, model="disconnect"), request())
    assert cut.code == grpc.StatusCode.UNAVAILABLE
    assert cut.reason in {"upstream_disconnected", "upstream_malformed_response"}


async def test_closing_the_stream_disconnects_the_upstream(fake: GeminiFake) -> None:
    adapter = make(fake, model="long")
    before = fake.state.disconnects
    stream = adapter.generate(request())
    try:
        assert (await anext(stream)).delta == " w0"
        await stream.aclose()
        await until(
            lambda: fake.state.disconnects > before, 10, "the fake to see the client go away"
        )
    finally:
        await adapter.close()


async def test_key_pool_rotates_past_a_rejected_key(fake: GeminiFake) -> None:
    fake.state.reject_keys = {KEY: 429}
    try:
        adapter = make(fake, api_key_env=["GEMINI_FAKE_KEY", "GEMINI_FAKE_KEY_B"])
        events = await collect(adapter, request(max_tokens=2))
        assert "".join(e.delta for e in events) == "w0 w1"
        assert fake.state.keys[-2:] == [KEY, "AIza-test-secret-0002"]
    finally:
        fake.state.reject_keys = {}
