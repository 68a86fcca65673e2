"""Quotas under bursts and store faults, against the real Redis on 127.0.0.1:6379 (its own key
prefix per test, deleted afterwards) and the in-memory counters.

- 50 admissions at once against a small tokens-per-minute limit and a small budget: what is
  charged never passes the limit by more than one request's reservation, and settling
  refunds what the requests did not use.
- Redis that answers after the timeout (a proxy that holds the replies) and then drops every
  connection: the admissions it applied late are taken back, no in-flight slot leaks.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.quota.counters import (
    Counters,
    CountersUnavailable,
    Ticket,
)
from hybridinference.gateway.quota.guard import QuotaGuard
from hybridinference.gateway.quota.limits import QuotaLimits
from hybridinference.gateway.quota.memory import MemoryCounters
from hybridinference.gateway.quota.redis_counters import RedisCounters
from hybridinference.gateway.quota.reservation import Prices, Reserver
from hybridinference.keys.model import ApiKey
from support.polling import until
from support.tcp_proxy import TcpProxy

REDIS_URL = "redis://127.0.0.1:6379/0"
BURST = 50


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"hi-test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    tcp = TcpProxy("127.0.0.1", 6379)
    tcp.start()
    yield tcp
    tcp.close()


def api_key(**limits: float) -> ApiKey:
    return ApiKey(
        id=f"key_{uuid.uuid4().hex[:8]}",
        name="burst",
        key_hash="h",
        prefix="hi-",
        limits=KeyLimitSettings(**limits),
    )


def stores(kind: str, prefix: str) -> list[Counters]:
    """Two replicas sharing Redis, or one gateway's memory."""
    if kind == "memory":
        return [MemoryCounters()]
    return [RedisCounters(REDIS_URL, prefix, timeout_s=2.0, retry_after_s=0.1) for _ in range(2)]


RESERVER = Reserver(
    default_cap=64, prices={"m": Prices(prompt_per_1m=10.0, completion_per_1m=20.0)}
)
CALL = ChatCall(
    "m",
    [chat_pb2.ChatMessage(role="user", content="hello there")],
    chat_pb2.SamplingParams(max_tokens=16),
    stream=False,
)
RESERVED = RESERVER.reserve(CALL.model, CALL.messages, 16)


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize(
    ("limit_name", "limit", "reserved"),
    [
        # 12.5 and 4.5 reservations: the last admitted one crosses the limit.
        ("tokens_per_minute", RESERVED.tokens * 25 // 2, RESERVED.tokens),
        ("daily_budget_usd", RESERVED.cost_usd * 4.5, RESERVED.cost_usd),
    ],
)
async def test_a_burst_overshoots_by_at_most_one_reservation(
    kind: str, limit_name: str, limit: float, reserved: float, prefix: str
) -> None:
    replicas = stores(kind, prefix)
    guards = [
        QuotaGuard(counters, KeyLimitSettings(), fail_open=False, hold_s=60, reserver=RESERVER)
        for counters in replicas
    ]
    key = api_key(**{limit_name: limit})
    rng = random.Random(14)

    async def one(index: int) -> Ticket | None:
        try:
            return await guards[index % len(guards)].admit(key, CALL)
        except ServiceError as error:
            assert error.http_status == 429, error.message
            return None

    try:
        # A burst across a minute boundary would count part of itself at a weight below 1.
        await until(lambda: 1.0 < time.time() % 60 < 55.0, 10, "the middle of a minute")
        tickets = await asyncio.gather(*(one(i) for i in range(BURST)))
        admitted = [t for t in tickets if t is not None]
        # Admitted while something was left: 0, r, 2r, ... < limit, so exactly ceil(limit / r)
        # — the burst overshoots by less than one reservation, and nothing is refused early.
        expected = math.ceil(limit / reserved)
        assert len(admitted) == expected, (len(admitted), expected)
        assert limit <= len(admitted) * reserved < limit + reserved
        # Settle with less than reserved (seeded): the difference is refunded, and the
        # limit admits again once enough came back.
        for ticket in admitted:
            tokens = rng.randint(1, RESERVED.tokens // 2)
            guards[0].settle(ticket, tokens, tokens * RESERVED.cost_usd / RESERVED.tokens)
        await until(lambda: all(g.pending == 0 for g in guards), 10, "settles")
        assert await guards[-1].admit(key, CALL) is not None
    finally:
        for guard in guards:
            await guard.close()


async def test_a_late_answer_and_a_restart_leak_no_slot(prefix: str, proxy: TcpProxy) -> None:
    """Redis applies admissions whose answers the proxy holds past the timeout; the guard
    voids them, then the proxy drops every connection (as a restart would): no slot stays
    taken, no request or reservation stays counted, and the key can fill its limit again."""
    counters = RedisCounters(
        f"redis://127.0.0.1:{proxy.port}/0", prefix, timeout_s=0.25, retry_after_s=0.1
    )
    guard = QuotaGuard(
        counters,
        KeyLimitSettings(),
        fail_open=True,
        hold_s=300,
        settle_attempts=20,
        # The first void waits this long, so the test sees the late-applied admissions.
        settle_backoff_s=0.5,
    )
    key = api_key(max_concurrent=20, tokens_per_minute=10_000)
    direct = aioredis.Redis.from_url(REDIS_URL)
    in_flight = counters.in_flight_key(key.id)
    try:
        # 20 pooled connections, ready (a new connection's handshake would stall, not its work).
        warm = await asyncio.gather(*(guard.admit(key, None) for _ in range(20)))
        for ticket in warm:
            guard.settle(ticket, 0, 0.0)
        await until(lambda: guard.pending == 0, 10, "warm-up settles")
        proxy.stall_replies()
        # Fail open: each is let through uncounted, its late-applied admission voided.
        assert await asyncio.gather(*(guard.admit(key, None) for _ in range(20))) == [None] * 20
        assert guard.pending > 0
        # Redis did the work: the 20 admissions hold their slots, though nobody got an answer.
        assert int(await direct.zcard(in_flight)) == 20
        proxy.cut()
        proxy.resume()
        proxy.restore()
        await until(lambda: guard.pending == 0, 30, "the voids")

        async def clean() -> bool:
            return int(await direct.zcard(in_flight)) == 0

        await until(clean, 10, "no slot left")
        # The voided requests are not counted either: only the 20 served in the warm-up.
        counted = [k async for k in direct.scan_iter(match=f"{prefix}*:req:*")]
        assert sum([int(await direct.get(name) or 0) for name in counted]) == 20
        # The key's 20 slots are all free again.
        tickets = await asyncio.gather(*(guard.admit(key, None) for _ in range(20)))
        assert all(t is not None for t in tickets)
        for ticket in tickets:
            guard.settle(ticket, 0, 0.0)
        await until(lambda: guard.pending == 0, 10, "settles")
        assert await clean()
    finally:
        await guard.close()
        await direct.aclose()


async def test_a_void_that_overtakes_its_admission_forbids_it(prefix: str) -> None:
    counters = RedisCounters(REDIS_URL, prefix, timeout_s=2.0, retry_after_s=0.1)
    limits = QuotaLimits(max_concurrent=1)
    ticket = Ticket("key_v", uuid.uuid4().hex, limits, RESERVED, 1.0e9)
    try:
        await counters.void(ticket, 60)
        with pytest.raises(CountersUnavailable):
            await counters.admit(ticket, 60)
        other = Ticket("key_v", uuid.uuid4().hex, limits, RESERVED, 1.0e9)
        assert await counters.admit(other, 60) is None
    finally:
        await counters.close()
