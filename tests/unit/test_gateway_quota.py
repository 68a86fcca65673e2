"""Per-key quotas: each limit with in-memory counters, the refusal's shapes, failure modes."""

from __future__ import annotations

import asyncio
from calendar import timegm

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError, from_rpc_error
from hybridinference.gateway.quota.counters import Counters, CountersUnavailable
from hybridinference.gateway.quota.guard import QuotaGuard
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal, quota_exceeded
from hybridinference.gateway.quota.memory import MemoryCounters
from hybridinference.gateway.quota.windows import windows_at
from hybridinference.keys.model import ApiKey

# 2026-03-31 23:59:30 UTC: the last half-minute of a day and of a month.
NOW = float(timegm((2026, 3, 31, 23, 59, 30)))


def key(**limits: float) -> ApiKey:
    return ApiKey(
        id="key_q", name="q", key_hash="h", prefix="hi-", limits=KeyLimitSettings(**limits)
    )


def test_windows_and_time_left() -> None:
    w = windows_at(NOW)
    assert (w.day, w.month) == ("20260331", "202603")
    assert w.minute_left_s == pytest.approx(30)
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


async def test_requests_per_minute_resets_with_the_minute() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(requests_per_minute=2)
    assert await counters.admit("k", "t1", limits, NOW, 60) is None
    assert await counters.admit("k", "t2", limits, NOW, 60) is None
    refusal = await counters.admit("k", "t3", limits, NOW, 60)
    assert refusal is not None and refusal.limit_name == "requests_per_minute"
    assert refusal.used == 2 and refusal.retry_after_s == pytest.approx(30)
    # Other keys are not affected; the next minute starts from zero.
    assert await counters.admit("other", "t4", limits, NOW, 60) is None
    assert await counters.admit("k", "t5", limits, NOW + 30, 60) is None


async def test_tokens_per_minute_charged_on_completion() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(tokens_per_minute=100)
    assert await counters.admit("k", "t1", limits, NOW, 60) is None
    # Admission alone charges no tokens: they are known only at the end.
    assert await counters.admit("k", "t2", limits, NOW, 60) is None
    await counters.settle("k", "t1", limits, 150, 0.0, NOW)
    refusal = await counters.admit("k", "t3", limits, NOW, 60)
    assert refusal is not None and refusal.limit_name == "tokens_per_minute"
    assert refusal.used == 150


async def test_concurrency_slots_release_on_settle_and_expire() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(max_concurrent=1)
    assert await counters.admit("k", "t1", limits, NOW, 10) is None
    refusal = await counters.admit("k", "t2", limits, NOW, 10)
    assert refusal is not None and refusal.limit_name == "max_concurrent"
    await counters.settle("k", "t1", limits, 0, 0.0, NOW)
    assert await counters.admit("k", "t3", limits, NOW, 10) is None
    # A slot never released (its gateway died) expires after hold_s.
    assert await counters.admit("k", "t4", limits, NOW + 11, 10) is None


@pytest.mark.parametrize(
    ("limit_name", "retry_s"), [("daily_budget_usd", 30), ("monthly_budget_usd", 30)]
)
async def test_budgets(limit_name: str, retry_s: float) -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(**{limit_name: 0.01})
    assert await counters.admit("k", "t1", limits, NOW, 60) is None
    await counters.settle("k", "t1", limits, 10, 0.004, NOW)
    assert await counters.admit("k", "t2", limits, NOW, 60) is None
    await counters.settle("k", "t2", limits, 10, 0.007, NOW)
    refusal = await counters.admit("k", "t3", limits, NOW, 60)
    assert refusal is not None and refusal.limit_name == limit_name
    assert refusal.used == pytest.approx(0.011)
    assert refusal.retry_after_s == pytest.approx(retry_s)
    # A new day (and month) starts from zero.
    assert await counters.admit("k", "t4", limits, NOW + 60, 60) is None


async def test_a_refused_request_is_not_counted() -> None:
    counters = MemoryCounters()
    limits = QuotaLimits(requests_per_minute=1, max_concurrent=5)
    assert await counters.admit("k", "t1", limits, NOW, 60) is None
    for ticket in ("t2", "t3"):
        assert await counters.admit("k", ticket, limits, NOW, 60) is not None
    await counters.settle("k", "t1", limits, 0, 0.0, NOW)
    assert await counters.admit("k", "t4", limits, NOW + 30, 60) is None


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

    async def admit(
        self, key_id: str, ticket: str, limits: QuotaLimits, now: float, hold_s: float
    ) -> Refusal | None:
        raise CountersUnavailable("down")

    async def settle(
        self,
        key_id: str,
        ticket: str,
        limits: QuotaLimits,
        tokens: int,
        cost_usd: float,
        now: float,
    ) -> None:
        self.settled += 1
        raise CountersUnavailable("down")


async def test_store_down_fails_open_or_closed() -> None:
    limited = key(requests_per_minute=1)
    open_guard = QuotaGuard(DeadCounters(), KeyLimitSettings(), fail_open=True, hold_s=60)
    assert await open_guard.admit(limited) is None
    closed_guard = QuotaGuard(DeadCounters(), KeyLimitSettings(), fail_open=False, hold_s=60)
    with pytest.raises(ServiceError) as caught:
        await closed_guard.admit(limited)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and caught.value.http_status == 503
    assert caught.value.retry_after_s == 1.0


async def test_unlimited_keys_never_touch_the_counters() -> None:
    guard = QuotaGuard(DeadCounters(), KeyLimitSettings(), fail_open=False, hold_s=60)
    assert await guard.admit(key()) is None


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
