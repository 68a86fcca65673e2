"""The sim provider's load knobs used by the routing harness: limited concurrency with a queue
reported as `waiting`, and a TTFT tail."""

from __future__ import annotations

import asyncio
import random

from hybridinference.common.settings import ProviderEndpointSettings, SimEndpointSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.sim import SimAdapter


def adapter(**sim: object) -> SimAdapter:
    settings = ProviderEndpointSettings(
        id="e",
        model="m",
        sim=SimEndpointSettings(output_tokens=2, itl_ms=0, **sim),
    )
    return SimAdapter(settings, random.Random(1))


def request() -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        endpoint="e", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
    )


async def settle(sim: SimAdapter, waiting: int) -> None:
    """Lets the event loop run until the queue has ``waiting`` entries (a few turns at most)."""
    for _ in range(100):
        if (await sim.status()).waiting == waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"queue never reached {waiting}")


async def test_generations_beyond_max_concurrency_wait_and_are_reported() -> None:
    sim = adapter(ttft_ms=0, max_concurrency=1)
    first = sim.generate(request())
    await anext(first)  # holds the only slot
    second = asyncio.ensure_future(anext(sim.generate(request())))
    await settle(sim, waiting=1)
    assert not second.done()
    await first.aclose()  # frees the slot
    event = await second
    assert event.delta
    assert (await sim.status()).waiting == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    sim = adapter(ttft_ms=0, max_concurrency=1)
    first = sim.generate(request())
    await anext(first)
    waiter = asyncio.ensure_future(anext(sim.generate(request())))
    await settle(sim, waiting=1)
    waiter.cancel()
    await settle(sim, waiting=0)
    await first.aclose()


def test_ttft_tail_and_jitter_are_drawn_from_the_rng() -> None:
    sim = adapter(ttft_ms=10, ttft_jitter_ms=4, tail_rate=0.25, tail_ms=100)
    delays = [sim._ttft_s() * 1000 for _ in range(2000)]
    tails = [d for d in delays if d >= 110]
    assert all(10 <= d <= 114 for d in delays)
    assert 400 <= len(tails) <= 600
    assert adapter(ttft_ms=7)._ttft_s() == 0.007
