"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.router.breaker import CircuitBreaker, CircuitState, counts_against_endpoint
from support.router_fakes import rpc_error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("a", failure_threshold=3, cooldown_s=30.0, clock=clock)


def test_opens_after_threshold_consecutive_failures_only() -> None:
    clock = FakeClock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is CircuitState.CLOSED and b.acquire()
    b.record_failure()
    assert b.state is CircuitState.OPEN
    assert not b.available() and not b.acquire()
    assert b.retry_in_s() == pytest.approx(30.0)
    assert b.opened_total == 1


def test_half_open_after_cooldown_lets_one_probe_through_and_closes_on_success() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 29.9
    assert b.state is CircuitState.OPEN and not b.acquire()
    assert b.retry_in_s() == pytest.approx(0.1)
    clock.now += 0.1
    assert b.state is CircuitState.HALF_OPEN and b.available()
    assert b.acquire()
    # One probe at a time: a second request is refused while the first is out.
    assert not b.available() and not b.acquire()
    b.record_success()
    assert b.state is CircuitState.CLOSED and b.consecutive_failures == 0
    assert b.acquire() and b.acquire()


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 30
    assert b.acquire()
    b.record_failure()
    assert b.state is CircuitState.OPEN
    assert b.retry_in_s() == pytest.approx(30.0)
    assert b.opened_total == 2


def test_probe_without_verdict_frees_the_slot() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 30
    assert b.acquire()
    b.release()  # e.g. the client cancelled the probe request
    assert b.state is CircuitState.HALF_OPEN and b.acquire()


def test_reconfigure_keeps_state_and_rejects_nonsense() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    b.configure(failure_threshold=5, cooldown_s=1.0)
    assert b.state is CircuitState.OPEN
    clock.now += 1.0
    assert b.state is CircuitState.HALF_OPEN
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0, cooldown_s=1.0, clock=clock)


def test_only_the_endpoints_own_failures_count_against_it() -> None:
    provider_timeout = rpc_error(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "no token within 60s",
        rich=ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "x", reason="upstream_first_token_timeout"
        ),
    )
    local_timer = rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    # The provider's first-token/idle timeout counts, whoever set a deadline.
    assert counts_against_endpoint(provider_timeout, caller_deadline=True)
    assert counts_against_endpoint(provider_timeout, caller_deadline=False)
    # gRPC's own timer firing on the caller's deadline does not; with no caller deadline a
    # bare DEADLINE_EXCEEDED can only have come from the endpoint.
    assert not counts_against_endpoint(local_timer, caller_deadline=True)
    assert counts_against_endpoint(local_timer, caller_deadline=False)
    assert counts_against_endpoint(rpc_error(grpc.StatusCode.UNAVAILABLE), caller_deadline=True)
    assert not counts_against_endpoint(rpc_error(grpc.StatusCode.CANCELLED), caller_deadline=True)
    assert not counts_against_endpoint(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT), caller_deadline=False
    )
