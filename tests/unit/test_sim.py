"""The simulated provider: deterministic text, exact token accounting, stops, failure injection."""

from __future__ import annotations

import random

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings, SimEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter, build_adapter
from hybridinference.providers.sim import (
    SimAdapter,
    count_prompt_tokens,
    plan_completion,
    sim_tokens,
)

MESSAGES = [
    chat_pb2.ChatMessage(role="system", content="You are terse."),
    chat_pb2.ChatMessage(role="user", content="Tell me about rivers and mountains"),
]


def adapter(**sim: object) -> SimAdapter:
    settings = SimEndpointSettings.model_validate({"ttft_ms": 0, "itl_ms": 0, **sim})
    endpoint = ProviderEndpointSettings(id="sim-t", model="hi-sim-test", sim=settings)
    return SimAdapter(endpoint, rng=random.Random(7))


def request(
    messages: list[chat_pb2.ChatMessage] | None = None, **sampling: object
) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id="req-1",
        endpoint="sim-t",
        messages=MESSAGES if messages is None else messages,
        sampling=chat_pb2.SamplingParams(**sampling),
    )


async def collect(
    sim: SimAdapter, req: provider_pb2.GenerateRequest
) -> list[provider_pb2.GenerateResponse]:
    return [event async for event in sim.generate(req)]


def test_text_is_deterministic_and_depends_on_prompt() -> None:
    first = sim_tokens(MESSAGES, 30)
    assert first == sim_tokens(list(MESSAGES), 30)
    assert first[0][0] != " " and all(token.startswith(" ") for token in first[1:])
    other = [chat_pb2.ChatMessage(role="user", content="something else entirely")]
    assert sim_tokens(other, 30) != first
    assert sim_tokens(MESSAGES, 30, seed=1) != first
    # A longer completion extends a shorter one: the prefix does not depend on the length.
    assert sim_tokens(MESSAGES, 10) == first[:10]


async def test_stream_shape_and_usage() -> None:
    events = await collect(adapter(output_tokens=12), request())
    tokens, final = events[:-1], events[-1]
    assert len(tokens) == 12
    assert tokens[0].model == "hi-sim-test" and all(not e.model for e in events[1:])
    assert all(not e.HasField("usage") for e in tokens)
    assert final.delta == ""
    assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert final.usage.completion_tokens == len(tokens)
    assert final.usage.prompt_tokens == count_prompt_tokens(MESSAGES) == 3 + 1 + 6 + 1
    assert final.usage.total_tokens == final.usage.prompt_tokens + 12
    assert "".join(e.delta for e in tokens) == "".join(sim_tokens(MESSAGES, 12))
    again = await collect(adapter(output_tokens=12), request())
    assert again == events


@pytest.mark.parametrize(
    ("max_tokens", "streamed", "finish"),
    [
        (5, 5, chat_pb2.FINISH_REASON_LENGTH),
        (12, 12, chat_pb2.FINISH_REASON_STOP),
        (50, 12, chat_pb2.FINISH_REASON_STOP),
        (1, 1, chat_pb2.FINISH_REASON_LENGTH),
    ],
)
async def test_max_tokens(
    max_tokens: int, streamed: int, finish: chat_pb2.FinishReason.ValueType
) -> None:
    events = await collect(adapter(output_tokens=12), request(max_tokens=max_tokens))
    assert len(events) - 1 == streamed
    assert events[-1].usage.completion_tokens == streamed
    assert events[-1].finish_reason == finish


def test_max_tokens_must_be_positive() -> None:
    with pytest.raises(ServiceError) as info:
        plan_completion(MESSAGES, chat_pb2.SamplingParams(max_tokens=0), 10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.param == "sampling.max_tokens"


async def test_stop_sequence_truncates_before_it() -> None:
    full = "".join(sim_tokens(MESSAGES, 20))
    stop = sim_tokens(MESSAGES, 20)[8]  # " word": the 9th token, leading space included
    expected = full[: full.index(stop)]
    events = await collect(adapter(output_tokens=20), request(stop=["never-appears", stop]))
    text = "".join(e.delta for e in events)
    assert text == expected and stop not in text
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_STOP
    assert events[-1].usage.completion_tokens == len(events) - 1 <= 8


async def test_stop_sequence_inside_a_token_keeps_its_prefix() -> None:
    tokens = sim_tokens(MESSAGES, 20)
    word = tokens[3]
    stop = word[2:]  # starts inside the 4th token, after " x"
    full = "".join(tokens)
    events = await collect(adapter(output_tokens=20), request(stop=[stop]))
    assert "".join(e.delta for e in events) == full[: full.index(stop)]
    assert events[-1].usage.completion_tokens == len(events) - 1


async def test_stop_at_the_very_start_streams_nothing() -> None:
    first = sim_tokens(MESSAGES, 1)[0]
    events = await collect(adapter(output_tokens=20), request(stop=[first[:1]]))
    assert len(events) == 1
    assert events[0].model == "hi-sim-test" and events[0].delta == ""
    assert events[0].usage.completion_tokens == 0
    assert events[0].finish_reason == chat_pb2.FINISH_REASON_STOP


async def test_stop_after_max_tokens_cut_is_ignored() -> None:
    tokens = sim_tokens(MESSAGES, 20)
    stop = next(t for t in tokens[10:] if t not in tokens[:10])
    events = await collect(adapter(output_tokens=20), request(max_tokens=10, stop=[stop]))
    assert events[-1].finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert events[-1].usage.completion_tokens == 10


async def test_fail_rate_one_fails_before_first_token() -> None:
    sim = adapter(fail_rate=1.0)
    stream = sim.generate(request())
    with pytest.raises(ServiceError) as info:
        await anext(stream)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.reason == "injected_failure"


async def test_fail_rate_zero_never_fails() -> None:
    sim = adapter(fail_rate=0.0, output_tokens=2)
    for _ in range(50):
        assert len(await collect(sim, request())) == 3


async def test_fail_rate_is_a_probability() -> None:
    sim = adapter(fail_rate=0.5, output_tokens=1)
    failures = 0
    for _ in range(200):
        try:
            await collect(sim, request())
        except ServiceError:
            failures += 1
    assert 60 < failures < 140


async def test_abort_after_tokens() -> None:
    sim = adapter(output_tokens=10, abort_after_tokens=3)
    received: list[provider_pb2.GenerateResponse] = []
    with pytest.raises(ServiceError) as info:
        async for event in sim.generate(request()):
            received.append(event)
    assert len(received) == 3
    assert all(e.delta for e in received) and not any(e.HasField("usage") for e in received)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.reason == "injected_abort"


async def test_abort_beyond_the_completion_does_not_fire() -> None:
    events = await collect(adapter(output_tokens=4, abort_after_tokens=4), request())
    assert events[-1].usage.completion_tokens == 4


async def test_status_and_factory() -> None:
    endpoint = ProviderEndpointSettings(id="sim-x", model="m-1")
    built = build_adapter("sim", endpoint)
    assert isinstance(built, ProviderAdapter)
    assert (built.endpoint_id, built.kind, built.model) == ("sim-x", "sim", "m-1")
    status = await built.status()
    assert (status.endpoint, status.provider, status.model, status.healthy) == (
        "sim-x",
        "sim",
        "m-1",
        True,
    )
    assert await built.list_models() == ["m-1"]
    await built.close()


def test_factory_rejects_unknown_kind() -> None:
    from hybridinference.common.settings import ConfigError

    with pytest.raises(ConfigError, match="unknown provider kind 'nope'"):
        build_adapter("nope", ProviderEndpointSettings(id="x", model="m"))


async def test_timing_follows_ttft_and_itl() -> None:
    import time

    sim = adapter(ttft_ms=60, itl_ms=20, output_tokens=4)
    start = time.monotonic()
    stamps = [time.monotonic() - start async for _ in sim.generate(request())]
    assert stamps[0] >= 0.055
    # Three inter-token gaps after the first token; the final event follows the last token.
    assert stamps[3] - stamps[0] >= 0.055
    assert stamps[4] - stamps[3] < 0.02
