"""The OpenAI-wire adapters (openai via the SDK, openai_compatible and vllm via aiohttp) against a
wire-faithful fake OpenAI API on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ConfigError, ProviderEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter, build_adapter
from support.adapter_calls import collect, failure
from support.fakes.openai_api import OpenAIFake
from support.polling import until

KINDS = ["openai", "openai_compatible", "vllm"]
KEY = "sk-test-secret-key-0001"
ENV = {"FAKE_KEY": KEY, "FAKE_KEY_B": "sk-test-secret-key-0002"}


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    yield from OpenAIFake.running()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def make(kind: str, fake: OpenAIFake, model: str = "ok", **options: Any) -> ProviderAdapter:
    settings = ProviderEndpointSettings(
        id=f"{kind}-ep",
        model=model,
        base_url=fake.base_url,
        api_key_env=options.pop("api_key_env", "FAKE_KEY"),
        **options,
    )
    return build_adapter(kind, settings)


def request(max_tokens: int | None = None, **sampling: Any) -> provider_pb2.GenerateRequest:
    params = chat_pb2.SamplingParams(**sampling)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    return provider_pb2.GenerateRequest(
        request_id="req-1",
        endpoint="x",
        messages=[
            chat_pb2.ChatMessage(role="system", content="be brief"),
            chat_pb2.ChatMessage(role="user", content="hello there"),
        ],
        sampling=params,
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_streams_tokens_with_usage_and_model_on_first_event(
    kind: str, fake: OpenAIFake
) -> None:
    events = await collect(make(kind, fake), request(max_tokens=4, temperature=0.0, seed=3))
    assert "".join(e.delta for e in events) == "w0 w1 w2 w3"
    assert events[0].model == "ok"
    assert all(not e.model for e in events[1:])
    final = events[-1]
    assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    # Prompt: "be brief" (2+1) + "hello there" (2+1); usage is the upstream's own.
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (6, 4)
    assert final.usage.total_tokens == 10
    assert final.usage.cached_tokens == 2
    sent = fake.state.requests[-1]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["temperature"] == 0.0 and sent["seed"] == 3
    # OpenAI's newer field for the cap; engines get the classic one.
    assert sent["max_completion_tokens" if kind == "openai" else "max_tokens"] == 4
    assert fake.state.auth_headers[-1] == f"Bearer {KEY}"
    assert fake.state.request_ids[-1] == "req-1"


@pytest.mark.parametrize("kind", KINDS)
async def test_unset_sampling_is_not_sent(kind: str, fake: OpenAIFake) -> None:
    events = await collect(make(kind, fake), request())
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_STOP
    assert events[-1].usage.completion_tokens == 5
    sent = fake.state.requests[-1]
    for key in ("temperature", "top_p", "seed", "stop", "max_tokens", "max_completion_tokens"):
        assert key not in sent


@pytest.mark.parametrize("kind", KINDS)
async def test_429_is_resource_exhausted_with_retry_info(kind: str, fake: OpenAIFake) -> None:
    error = await failure(make(kind, fake, model="status-429"), request())
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "upstream_rate_limited"
    assert error.retry_after_s == 7
    assert error.metadata["retryable"] == "true"
    assert error.metadata["upstream_status"] == "429"


@pytest.mark.parametrize("kind", KINDS)
async def test_401_is_unavailable_not_the_clients_fault(kind: str, fake: OpenAIFake) -> None:
    error = await failure(make(kind, fake, model="status-401"), request())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "upstream_unauthenticated"
    assert KEY not in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_500_is_unavailable_and_retryable(kind: str, fake: OpenAIFake) -> None:
    error = await failure(make(kind, fake, model="status-500"), request())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "upstream_internal_error"
    assert error.metadata["retryable"] == "true"


@pytest.mark.parametrize("kind", KINDS)
async def test_first_token_timeout(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake, model="slow-first", first_token_timeout_s=0.3)
    error = await failure(adapter, request())
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason == "upstream_first_token_timeout"


@pytest.mark.parametrize("kind", KINDS)
async def test_idle_timeout_between_tokens(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake, model="stall", idle_timeout_s=0.3)
    received: list[str] = []
    with pytest.raises(ServiceError) as caught:
        try:
            async for event in adapter.generate(request()):
                received.append(event.delta)
        finally:
            await adapter.close()
    assert received == ["w0"]
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == "upstream_idle_timeout"


@pytest.mark.parametrize("kind", KINDS)
async def test_malformed_chunk_is_a_clear_error(kind: str, fake: OpenAIFake) -> None:
    error = await failure(make(kind, fake, model="malformed", idle_timeout_s=5), request())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "upstream_malformed_response"


@pytest.mark.parametrize("kind", KINDS)
async def test_upstream_disconnect_mid_stream(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake, model="disconnect")
    received: list[str] = []
    with pytest.raises(ServiceError) as caught:
        try:
            async for event in adapter.generate(request()):
                received.append(event.delta)
        finally:
            await adapter.close()
    assert received == ["w0", " w1"]
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "upstream_disconnected"


@pytest.mark.parametrize("kind", KINDS)
async def test_closing_the_stream_disconnects_the_upstream(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake, model="long")
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


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_the_task_disconnects_the_upstream(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake, model="long")
    before = fake.state.disconnects
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in adapter.generate(request()):
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(
            lambda: fake.state.disconnects > before, 10, "the fake to see the client go away"
        )
    finally:
        await adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_key_pool_moves_past_a_rate_limited_key(kind: str, fake: OpenAIFake) -> None:
    fake.state.reject_keys = {KEY: 429}
    try:
        adapter = make(kind, fake, api_key_env=["FAKE_KEY", "FAKE_KEY_B"])
        events = await collect(adapter, request(max_tokens=2))
        assert "".join(e.delta for e in events) == "w0 w1"
        assert fake.state.auth_headers[-2:] == [f"Bearer {KEY}", "Bearer sk-test-secret-key-0002"]
    finally:
        fake.state.reject_keys = {}


@pytest.mark.parametrize("kind", KINDS)
async def test_every_key_rejected_fails_with_retry_info(kind: str, fake: OpenAIFake) -> None:
    fake.state.reject_keys = {KEY: 401, "sk-test-secret-key-0002": 429}
    try:
        adapter = make(kind, fake, api_key_env=["FAKE_KEY", "FAKE_KEY_B"], key_cooldown_s=20)
        error = await failure(adapter, request())
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Both keys now rest; the next request fails fast without calling the upstream.
        calls = len(fake.state.requests)
        again = await failure(adapter, request())
        assert again.reason == "upstream_keys_cooling_down"
        assert again.retry_after_s is not None and 0 < again.retry_after_s <= 20
        assert len(fake.state.requests) == calls
    finally:
        fake.state.reject_keys = {}


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
async def test_status_and_models(kind: str, fake: OpenAIFake) -> None:
    adapter = make(kind, fake)
    try:
        status = await adapter.status()
        assert status.healthy and status.provider == kind
        assert await adapter.list_models() == ["ok"]
    finally:
        await adapter.close()


async def test_unreachable_upstream_is_unavailable() -> None:
    settings = ProviderEndpointSettings(
        id="down", model="ok", base_url="http://127.0.0.1:9/v1", connect_timeout_s=1
    )
    adapter = build_adapter("openai_compatible", settings)
    error = await failure(adapter, request())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "upstream_connect_failed"
    try:
        status = await adapter.status()
    finally:
        # status() opens a fresh session after failure() closed the adapter.
        await adapter.close()
    assert not status.healthy and status.detail


def test_missing_key_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    settings = ProviderEndpointSettings(
        id="ep", model="m", base_url="http://x/v1", api_key_env="NOT_SET_ANYWHERE"
    )
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        build_adapter("openai", settings)


def test_openai_compatible_needs_a_base_url() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        build_adapter("openai_compatible", ProviderEndpointSettings(id="ep", model="m"))
