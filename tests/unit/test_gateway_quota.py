"""Per-key quotas: each limit with in-memory counters, the refusal's shapes, failure modes."""

from __future__ import annotations

import asyncio
from calendar import timegm

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError, from_rpc_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.quota.counters import (
    Counters,
    CountersUnavailable,
    Reservation,
    Ticket,
)
from hybridinference.gateway.quota.guard import QuotaGuard
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal, quota_exceeded
from hybridinference.gateway.quota.memory import MemoryCounters
from hybridinference.gateway.quota.reservation import (
    TEMPLATE_TOKENS_PER_MESSAGE,
    Prices,
    Reserver,
)
from hybridinference.gateway.quota.windows import sliding_retry_after, sliding_used, windows_at
from hybridinference.keys.model import ApiKey
from support.polling import until

# 2026-03-31 23:59:30 UTC: the last half-minute of a day and of a month.
NOW = float(timegm((2026, 3, 31, 23, 59, 30)))


def ticket(
    key_id: str, name: str, limits: QuotaLimits, now: float, reserved: Reservation | None = None
) -> Ticket:
    return Ticket(key_id, name, limits, reserved or Reservation(), now)


def key(**limits: float) -> ApiKey:
    return ApiKey(
        id="key_q", name="q", key_hash="h", prefix="hi-", limits=KeyLimitSettings(**limits)
    )


def test_windows_and_time_left() -> None:
    w = windows_at(NOW)
    assert (w.day, w.month) == ("20260331", "202603")
    assert w.previous_weight == pytest.approx(0.5)
    assert w.day_left_s == pytest.approx(30)
    assert w.month_left_s == pytest.approx(30)
    december = windows_at(float(timegm((2026, 12, 15, 0, 0, 0))))
    assert december.month_left_s == pytest.approx(17 * 86_400)


def test_own_limits_override_defaults() -> None:
    defaults = KeyLimitSettings(requests_per_minute=10, daily_budget_usd=5)
    limits = QuotaLimits.resolve(KeyLimitSettings(requests_per_minute=2), defaults)
    assert limits.requests_per_minute == 2 and limits.daily_budget_usd == 5
    assert limits.tokens_per_minute is None
    assert QuotaLimits().unlimited and not limits.unlimited


async def test_requests_per_minute_slide() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(requests_per_minute=2)
    assert await counters.admit(ticket("k", "t1", limits, NOW), 60) is None
    assert await counters.admit(ticket("k", "t2", limits, NOW), 60) is None
    refusal = await counters.admit(ticket("k", "t3", limits, NOW), 60)
    assert refusal is not None and refusal.limit_name == "requests_per_minute"
    # Both requests stay in the sliding minute until half of them slid out: 60 s from now.
    assert refusal.used == 2 and refusal.retry_after_s == pytest.approx(60)
    # Other keys are not affected; a new fixed minute does not reset the count (no doubling
    # at the boundary), 60 s later half of the previous minute still counts.
    assert await counters.admit(ticket("other", "t4", limits, NOW), 60) is None
    assert await counters.admit(ticket("k", "t5", limits, NOW + 30), 60) is not None
    assert await counters.admit(ticket("k", "t6", limits, NOW + 60), 60) is None
    assert await counters.admit(ticket("k", "t7", limits, NOW + 60), 60) is not None


async def test_tokens_per_minute_charged_on_completion() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(tokens_per_minute=100)
    assert await counters.admit(ticket("k", "t1", limits, NOW), 60) is None
    # Without a reservation admission charges no tokens: they are known only at the end.
    assert await counters.admit(ticket("k", "t2", limits, NOW), 60) is None
    await counters.settle(ticket("k", "t1", limits, NOW), 150, 0.0)
    refusal = await counters.admit(ticket("k", "t3", limits, NOW), 60)
    assert refusal is not None and refusal.limit_name == "tokens_per_minute"
    assert refusal.used == 150


async def test_concurrency_slots_release_on_settle_and_expire() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(max_concurrent=1)
    assert await counters.admit(ticket("k", "t1", limits, NOW), 10) is None
    refusal = await counters.admit(ticket("k", "t2", limits, NOW), 10)
    assert refusal is not None and refusal.limit_name == "max_concurrent"
    await counters.settle(ticket("k", "t1", limits, NOW), 0, 0.0)
    assert await counters.admit(ticket("k", "t3", limits, NOW), 10) is None
    # A slot never released (its gateway died) expires after hold_s.
    assert await counters.admit(ticket("k", "t4", limits, NOW + 11), 10) is None


@pytest.mark.parametrize(
    ("limit_name", "retry_s"), [("daily_budget_usd", 30), ("monthly_budget_usd", 30)]
)
async def test_budgets(limit_name: str, retry_s: float) -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(**{limit_name: 0.01})
    assert await counters.admit(ticket("k", "t1", limits, NOW), 60) is None
    await counters.settle(ticket("k", "t1", limits, NOW), 10, 0.004)
    assert await counters.admit(ticket("k", "t2", limits, NOW), 60) is None
    await counters.settle(ticket("k", "t2", limits, NOW), 10, 0.007)
    refusal = await counters.admit(ticket("k", "t3", limits, NOW), 60)
    assert refusal is not None and refusal.limit_name == limit_name
    assert refusal.used == pytest.approx(0.011)
    assert refusal.retry_after_s == pytest.approx(retry_s)
    # A new day (and month) starts from zero.
    assert await counters.admit(ticket("k", "t4", limits, NOW + 60), 60) is None


async def test_a_refused_request_is_not_counted() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(requests_per_minute=2, max_concurrent=1)
    assert await counters.admit(ticket("k", "t1", limits, NOW), 60) is None
    for name in ("t2", "t3"):
        assert await counters.admit(ticket("k", name, limits, NOW), 60) is not None
    await counters.settle(ticket("k", "t1", limits, NOW), 0, 0.0)
    assert await counters.admit(ticket("k", "t4", limits, NOW), 60) is None


def test_rate_limit_error_shapes() -> None:
    error = quota_exceeded("key_q", Refusal("requests_per_minute", 2, 2, 29.2))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.http_status == 429
    grpc_status = error.to_status()
    assert grpc_status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = dict(grpc_status.trailing_metadata)["grpc-status-details-bin"]
    parsed = rpc_status.status_pb2.Status.FromString(details)
    kinds = {d.TypeName() for d in parsed.details}
    assert {"google.rpc.QuotaFailure", "google.rpc.RetryInfo", "google.rpc.ErrorInfo"} <= kinds
    failure = error_details_pb2.QuotaFailure()
    next(d for d in parsed.details if d.Is(failure.DESCRIPTOR)).Unpack(failure)
    assert failure.violations[0].subject == "api_key:key_q"
    assert "requests per minute" in failure.violations[0].description
    retry = error_details_pb2.RetryInfo()
    next(d for d in parsed.details if d.Is(retry.DESCRIPTOR)).Unpack(retry)
    assert retry.retry_delay.seconds == 29
    body = orjson.loads(error.openai_body())["error"]
    assert body == {
        "message": body["message"],
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "limit 2" in body["message"]


def test_budget_error_is_insufficient_quota() -> None:
    error = quota_exceeded("key_q", Refusal("daily_budget_usd", 0.5, 0.5123, 3600))
    body = orjson.loads(error.openai_body())["error"]
    assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota"
    assert "limit 0.5" in body["message"] and error.retry_after_s == 3600


class DeadCounters(Counters):
    def __init__(self) -> None:
        self.settled = 0
        self.voided = 0

    async def admit(self, ticket: Ticket, hold_s: float) -> Refusal | None:
        raise CountersUnavailable("down")

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        self.settled += 1
        raise CountersUnavailable("down")

    async def void(self, ticket: Ticket, hold_s: float) -> None:
        self.voided += 1
        raise CountersUnavailable("down")


async def test_store_down_fails_open_or_closed() -> None:
    limited = key(requests_per_minute=1)
    dead = DeadCounters()
    gave_up = gave_up_voids()
    open_guard = dead_guard(dead, fail_open=True)
    assert await open_guard.admit(limited) is None
    closed_guard = dead_guard(dead, fail_open=False)
    with pytest.raises(ServiceError) as caught:
        await closed_guard.admit(limited)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and caught.value.http_status == 503
    assert caught.value.retry_after_s == 1.0
    # Each lost admission is voided, retried a bounded number of times, then given up on.
    await until(lambda: open_guard.pending == 0 and closed_guard.pending == 0, 5, "voids")
    assert dead.voided == 2 * 3
    # Abandoned voids are counted, not silently dropped.
    assert gave_up_voids() == gave_up + 2


def gave_up_voids() -> float:
    value = REGISTRY.get_sample_value("hi_gateway_quota_gave_up_total", {"operation": "void"})
    return value or 0.0


def dead_guard(dead: DeadCounters, fail_open: bool) -> QuotaGuard:
    return QuotaGuard(
        dead,
        KeyLimitSettings(),
        fail_open=fail_open,
        hold_s=60,
        settle_attempts=3,
        settle_backoff_s=0.01,
    )


async def test_unlimited_keys_never_touch_the_counters() -> None:
    dead = DeadCounters()
    guard = dead_guard(dead, fail_open=False)
    assert await guard.admit(key()) is None
    assert guard.pending == 0 and dead.voided == 0


async def test_guard_refuses_and_settles_in_background() -> None:
    guard = QuotaGuard(MemoryCounters(), KeyLimitSettings(), fail_open=False, hold_s=60)
    limited = key(max_concurrent=1)
    ticket = await guard.admit(limited)
    assert ticket is not None
    with pytest.raises(ServiceError) as caught:
        await guard.admit(limited)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    guard.settle(ticket, 10, 0.0)
    await asyncio.sleep(0)  # let the background settle run
    await guard.close()
    assert await guard.admit(limited) is not None


def test_quota_failure_survives_a_hop() -> None:
    """A peer's QuotaFailure is rebuilt by from_rpc_error (errors.py, the one mapping)."""
    error = quota_exceeded("key_q", Refusal("tokens_per_minute", 10, 12, 5))

    class FakeCall(grpc.aio.AioRpcError):  # type: ignore[misc]
        def __init__(self) -> None:
            status = error.to_status()
            super().__init__(
                status.code,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(*status.trailing_metadata),
                status.details,
            )

    rebuilt = from_rpc_error(FakeCall())
    assert rebuilt.quota_violations == error.quota_violations
    assert rebuilt.retry_after_s == 5.0


def test_sliding_retry_after() -> None:
    # 30 s into a minute, nothing from the previous one: wait for the next minute, then until
    # enough of this one slid out.
    assert sliding_retry_after(0, 10, 5, NOW) == pytest.approx(30 + 30)
    # This minute alone is under the target: only the previous one's share must shrink.
    assert sliding_retry_after(10, 2, 5, NOW) == pytest.approx(60 * (1 - 3 / 10) - 30)
    assert sliding_used(10, 2, NOW) == pytest.approx(7)


def test_reservation_bounds_the_request() -> None:
    reserver = Reserver(
        default_cap=1000, caps={"small": 50}, prices={"m": Prices(1.0, 2.0), "small": Prices()}
    )
    messages = [chat_pb2.ChatMessage(role="user", content="héllo")]
    prompt = messages[0].ByteSize() + TEMPLATE_TOKENS_PER_MESSAGE
    assert prompt >= len("héllo".encode())
    with_max = reserver.reserve("m", messages, 16)
    assert with_max.tokens == prompt + 16
    assert with_max.cost_usd == pytest.approx((prompt * 1.0 + 16 * 2.0) / 1e6)
    assert reserver.reserve("m", messages, None).tokens == prompt + 1000
    assert reserver.reserve("small", messages, None) == Reservation(prompt + 50, 0.0)


async def test_reservations_hold_a_burst_and_settle_refunds() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(tokens_per_minute=100, daily_budget_usd=1.0)
    reserved = Reservation(40, 0.3)
    admitted = [
        name
        for name in ("t1", "t2", "t3", "t4", "t5")
        if await counters.admit(ticket("k", name, limits, NOW, reserved), 60) is None
    ]
    # 0, 40, 80 are under 100; the third reservation crosses it by less than one reservation.
    assert admitted == ["t1", "t2", "t3"]
    # Settling refunds what was not used: 3 x 10 tokens leave room again.
    for name in admitted:
        await counters.settle(ticket("k", name, limits, NOW, reserved), 10, 0.01)
    refusal = await counters.admit(ticket("k", "t6", limits, NOW, reserved), 60)
    assert refusal is None
    # A second settle (a retry whose first answer was lost) changes nothing.
    await counters.settle(ticket("k", "t1", limits, NOW, reserved), 10, 0.01)
    usage = counters.usage("k", NOW)
    assert usage == (30 + 40, pytest.approx(0.03 + 0.3))


async def test_void_takes_an_admission_back() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(requests_per_minute=1, max_concurrent=1, tokens_per_minute=100)
    lost = ticket("k", "t1", limits, NOW, Reservation(100, 0.0))
    assert await counters.admit(lost, 60) is None
    await counters.void(lost, 60)
    await counters.void(lost, 60)
    assert counters.usage("k", NOW) == (0, 0.0)
    assert await counters.admit(ticket("k", "t2", limits, NOW), 60) is None


async def test_an_admission_that_never_left_is_not_voided() -> None:
    class SkippedCounters(DeadCounters):
        async def admit(self, ticket: Ticket, hold_s: float) -> Refusal | None:
            raise CountersUnavailable("skipped", sent=False)

    skipped = SkippedCounters()
    guard = dead_guard(skipped, fail_open=True)
    assert await guard.admit(key(requests_per_minute=1)) is None
    assert guard.pending == 0 and skipped.voided == 0
