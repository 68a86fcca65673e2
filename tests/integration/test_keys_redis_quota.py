"""Redis-backed quota counters against the real Redis on 127.0.0.1:6379.

Every test writes under its own key prefix and deletes it afterwards (other engineers' tests use
the same Redis). Two RedisCounters instances stand for two gateway replicas.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError
from hybridinference.gateway.quota.counters import CountersUnavailable, Reservation, Ticket
from hybridinference.gateway.quota.guard import QuotaGuard
from hybridinference.gateway.quota.limits import QuotaLimits
from hybridinference.gateway.quota.redis_counters import RedisCounters
from hybridinference.gateway.quota.windows import sliding_retry_after
from hybridinference.keys.model import ApiKey
from support.procs import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


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


def replicas(prefix: str, count: int = 2) -> list[RedisCounters]:
    return [
        RedisCounters(REDIS_URL, prefix, timeout_s=2.0, retry_after_s=1.0) for _ in range(count)
    ]


async def test_requests_per_minute_shared_by_two_replicas(prefix: str) -> None:
    a, b = replicas(prefix)
    limits = QuotaLimits(requests_per_minute=3)
    now = time.time()
    try:
        results = [
            await counters.admit(Ticket("key_r", uuid.uuid4().hex, limits, Reservation(), now), 60)
            for counters in (a, b, a, b)
        ]
    finally:
        await a.close()
        await b.close()
    assert results[:3] == [None, None, None]
    refusal = results[3]
    assert refusal is not None and refusal.limit_name == "requests_per_minute"
    # Sliding minute: until enough of this minute's 3 slid out (up to 2 minutes away).
    assert refusal.used == 3
    assert refusal.retry_after_s == pytest.approx(sliding_retry_after(0, 3, 2, now))
    assert 0 < refusal.retry_after_s <= 120


async def test_tokens_and_budgets_charged_by_one_replica_refuse_on_the_other(prefix: str) -> None:
    a, b = replicas(prefix)
    now = time.time()
    try:
        for name, limits, tokens, cost in (
            ("tokens_per_minute", QuotaLimits(tokens_per_minute=100), 120, 0.0),
            ("daily_budget_usd", QuotaLimits(daily_budget_usd=0.01), 0, 0.02),
            ("monthly_budget_usd", QuotaLimits(monthly_budget_usd=0.01), 0, 0.02),
        ):
            key_id = f"key_{name}"
            assert await a.admit(Ticket(key_id, "t1", limits, Reservation(), now), 60) is None
            await a.settle(Ticket(key_id, "t1", limits, Reservation(), now), tokens, cost)
            refusal = await b.admit(Ticket(key_id, "t2", limits, Reservation(), now), 60)
            assert refusal is not None and refusal.limit_name == name, name
    finally:
        await a.close()
        await b.close()


async def test_concurrency_slots_across_replicas(prefix: str) -> None:
    a, b = replicas(prefix)
    limits = QuotaLimits(max_concurrent=2)
    now = time.time()
    try:
        assert await a.admit(Ticket("key_c", "t1", limits, Reservation(), now), 60) is None
        assert await b.admit(Ticket("key_c", "t2", limits, Reservation(), now), 60) is None
        refusal = await a.admit(Ticket("key_c", "t3", limits, Reservation(), now), 60)
        assert refusal is not None and refusal.limit_name == "max_concurrent"
        await b.settle(Ticket("key_c", "t2", limits, Reservation(), now), 0, 0.0)
        assert await a.admit(Ticket("key_c", "t4", limits, Reservation(), now), 60) is None
        # Slots of a replica that died expire after hold_s.
        assert await b.admit(Ticket("key_c", "t5", limits, Reservation(), now + 61), 60) is None
    finally:
        await a.close()
        await b.close()


async def test_redis_down_is_decided_fast_in_both_modes(prefix: str) -> None:
    # Nothing listens on this port: every call fails at once, and the back-off then skips
    # Redis altogether until retry_after_s passed.
    dead = RedisCounters(
        f"redis://127.0.0.1:{free_port()}/0", prefix, timeout_s=0.25, retry_after_s=30.0
    )
    key = ApiKey(
        id="key_d",
        name="d",
        key_hash="h",
        prefix="hi-",
        limits=KeyLimitSettings(requests_per_minute=1),
    )
    try:
        started = time.monotonic()
        with pytest.raises(CountersUnavailable):
            limits = QuotaLimits(requests_per_minute=1)
            await dead.admit(Ticket("key_d", "t", limits, Reservation(), time.time()), 60)
        open_guard = QuotaGuard(
            dead, KeyLimitSettings(), fail_open=True, hold_s=60, settle_attempts=1
        )
        for _ in range(5):
            assert await open_guard.admit(key) is None
        closed_guard = QuotaGuard(
            dead, KeyLimitSettings(), fail_open=False, hold_s=60, settle_attempts=1
        )
        with pytest.raises(ServiceError) as caught:
            await closed_guard.admit(key)
        assert caught.value.http_status == 503
        elapsed = time.monotonic() - started
    finally:
        await dead.close()
    # Bounded by the 0.25 s call timeout, not by any hang; generous for a loaded machine.
    assert elapsed < 5.0
