"""The relay's failure handling: circuit breakers, retry budget, backoff, RetryInfo, fallback
models, hedging, and the latency observations the policies feed on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.router.breaker import CircuitState
from hybridinference.router.v1 import router_pb2
from support.router_fakes import Script, Sleeps, make_relay, make_table, rpc_error, tokens
from tests.unit.test_router_breaker import FakeClock
from tests.unit.test_router_relay import collect, collect_until_error, request

# Hedged, and "a" is always the first pick.
HEDGED = {"hedging": True, "strategy": "weighted", "weights": {"a": 100, "b": 1}}
UNAVAILABLE = Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))


async def test_breaker_opens_after_three_failures_and_recovers_through_one_probe() -> None:
    clock = FakeClock()
    table, stubs = make_table({"w": ["a"], "v": ["b"]}, {"m": ["a", "b"]}, clock=clock)
    stubs["w"].script("a", UNAVAILABLE)
    relay, _ = make_relay(table, clock=clock)
    a = table.endpoints["a"]

    for _ in range(3):
        # Round robin starts on "a" every other request; the fallback hides each failure.
        assert (await collect(relay, request()))[-1].HasField("completion")
        while (
            stubs["w"].endpoints_called().count("a") < a.failures_total + 1 and a.failures_total < 3
        ):
            await collect(relay, request())
    assert a.failures_total == 3
    assert a.breaker.state is CircuitState.OPEN
    stubs["w"].calls.clear()
    for _ in range(4):
        assert (await collect(relay, request()))[0].selection.endpoint == "b"
    assert stubs["w"].calls == []

    # After the cool-down one probe goes to "a"; it succeeds and the circuit closes.
    clock.now += 30
    stubs["w"].scripts["a"] = [Script()]
    picks = [(await collect(relay, request()))[0].selection.endpoint for _ in range(2)]
    assert "a" in picks
    assert a.breaker.state is CircuitState.CLOSED


async def test_every_circuit_open_fails_fast_with_retry_info() -> None:
    clock = FakeClock()
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]}, clock=clock)
    relay, _ = make_relay(table, clock=clock)
    for _ in range(3):
        table.endpoints["a"].breaker.record_failure()
    clock.now += 10

    _, error = await collect_until_error(relay, request())

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "no_healthy_endpoint"
    assert "circuit" in error.message
    assert error.retry_after_s == pytest.approx(20.0)
    # The status carries it as google.rpc.RetryInfo.
    assert error.to_status().trailing_metadata
    assert stubs["w"].calls == []


async def test_client_errors_do_not_count_against_the_endpoint() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=[], error=rpc_error(grpc.StatusCode.INVALID_ARGUMENT)))
    relay, _ = make_relay(table)
    for _ in range(5):
        _, error = await collect_until_error(relay, request())
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert table.endpoints["a"].breaker.state is CircuitState.CLOSED


async def test_retries_back_off_with_jitter_and_respect_max_attempts() -> None:
    table, stubs = make_table(
        {"w": ["a", "b", "c", "d"]},
        {"m": ["a", "b", "c", "d"]},
        options={"m": {"max_attempts": 3}},
    )
    for endpoint in "abcd":
        stubs["w"].script(endpoint, UNAVAILABLE)
    sleeps = Sleeps()
    relay, _ = make_relay(table, sleeps=sleeps)

    _, error = await collect_until_error(relay, request())

    assert stubs["w"].endpoints_called() == ["a", "b", "c"]
    assert "attempt limit 3" in error.message and "3 attempt(s)" in error.message
    # Full jitter under 10 ms, then under 20 ms (defaults: base 10 ms, cap 200 ms).
    assert len(sleeps.delays) == 2
    assert 0 <= sleeps.delays[0] <= 0.01 and 0 <= sleeps.delays[1] <= 0.02


async def test_retry_budget_caps_extra_load() -> None:
    table, stubs = make_table(
        {"w": ["a", "b"]},
        {"m": ["a", "b"]},
        options={"m": {"retry_budget_ratio": 0.0, "retry_budget_burst": 1}},
    )
    for endpoint in "ab":
        stubs["w"].script(endpoint, UNAVAILABLE)
    relay, _ = make_relay(table)
    # Breakers out of the way: this is about the budget only.
    for e in table.endpoints.values():
        e.breaker.configure(failure_threshold=100, cooldown_s=1)

    _, first = await collect_until_error(relay, request())
    _, second = await collect_until_error(relay, request())

    assert "2 attempt(s)" in first.message
    assert "retry budget exhausted" in second.message and "1 attempt(s)" in second.message
    assert table.models["m"].budget.denied_total == 1


async def test_deadline_shorter_than_the_backoff_stops_retrying() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    stubs["w"].script("a", UNAVAILABLE)
    relay, _ = make_relay(table)
    error: ServiceError
    with pytest.raises(ServiceError) as caught:
        await collect(relay, request(), remaining=lambda: 0.0)
    error = caught.value
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_retry_info_keeps_the_endpoint_out_of_rotation_and_reaches_the_caller() -> None:
    clock = FakeClock()
    table, stubs = make_table({"w": ["a"], "v": ["b"]}, {"m": ["a", "b"]}, clock=clock)
    throttled = ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after_s=5)
    error_429 = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", rich=throttled)
    stubs["w"].script("a", Script(events=[], error=error_429))
    stubs["v"].script("b", UNAVAILABLE)
    relay, _ = make_relay(table, clock=clock)

    _, error = await collect_until_error(relay, request())
    assert error.retry_after_s == pytest.approx(5.0)
    assert table.endpoints["a"].retry_after_until == pytest.approx(clock.now + 5)

    stubs["v"].scripts["b"] = [Script()]
    stubs["w"].scripts["a"] = [Script()]
    stubs["w"].calls.clear()
    for _ in range(3):
        assert (await collect(relay, request()))[0].selection.endpoint == "b"
    assert stubs["w"].calls == []
    clock.now += 5
    picks = {(await collect(relay, request()))[0].selection.endpoint for _ in range(2)}
    assert "a" in picks


async def test_fallback_model_serves_when_every_endpoint_of_the_model_fails() -> None:
    table, stubs = make_table(
        {"w": ["a"], "v": ["b"]},
        {"primary": ["a"], "backup": ["b"]},
        options={"primary": {"fallbacks": ["backup"]}},
    )
    stubs["w"].script("a", UNAVAILABLE)
    relay, _ = make_relay(table)

    responses = await collect(relay, request("primary"))

    assert responses[0].selection.endpoint == "b"
    assert responses[0].selection.served_model == "up-model"
    assert responses[0].selection.attempts == 2


async def test_pinned_request_ignores_an_open_circuit_and_gets_no_fallback() -> None:
    table, stubs = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    relay, _ = make_relay(table)
    for _ in range(3):
        table.endpoints["a"].breaker.record_failure()
    responses = await collect(relay, request(pinned_endpoint="a"))
    assert responses[0].selection.endpoint == "a"
    stubs["w"].script("a", UNAVAILABLE)
    _, error = await collect_until_error(relay, request(pinned_endpoint="a"))
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert stubs["w"].endpoints_called() == ["a", "a"]


def warm(table_endpoint: object, ms: float, n: int = 20) -> None:
    for _ in range(n):
        table_endpoint.stats.record_ttft(ms)  # type: ignore[attr-defined]


async def test_hedge_starts_a_backup_after_p90_and_the_first_token_wins() -> None:
    table, stubs = make_table(
        {"w": ["a"], "v": ["b"]},
        {"m": ["a", "b"]},
        options={
            "m": {
                "hedging": True,
                "hedge_min_delay_ms": 0,
                "strategy": "weighted",
                "weights": {"a": 100, "b": 1},
            }
        },
    )
    warm(table.endpoints["a"], 1.0)
    stubs["w"].script("a", Script(events=[], hang=True))
    relay, _ = make_relay(table)

    responses = await collect(relay, request())

    assert responses[0].selection.endpoint == "b"
    assert responses[0].selection.attempts == 2
    assert responses[-1].HasField("completion")
    ((_, _, primary_call),) = stubs["w"].calls
    assert primary_call.cancelled
    a, b = table.endpoints["a"], table.endpoints["b"]
    assert (a.in_flight, b.in_flight, b.hedges_total) == (0, 0, 1)
    # The loser was cancelled, not failed: its circuit is untouched.
    assert a.failures_total == 0 and a.breaker.consecutive_failures == 0


async def test_no_hedge_without_samples_or_when_the_primary_is_quick() -> None:
    table, stubs = make_table(
        {"w": ["a"], "v": ["b"]},
        {"m": ["a", "b"]},
        options={"m": {"hedging": True, "strategy": "weighted", "weights": {"a": 100, "b": 1}}},
    )
    relay, _ = make_relay(table)
    assert (await collect(relay, request()))[0].selection.endpoint == "a"
    warm(table.endpoints["a"], 10_000.0)
    assert (await collect(relay, request()))[0].selection.endpoint == "a"
    assert stubs["v"].calls == []


async def test_hedge_whose_backup_fails_still_returns_the_primary() -> None:
    table, stubs = make_table(
        {"w": ["a"], "v": ["b"]},
        {"m": ["a", "b"]},
        options={"m": {**HEDGED, "hedge_min_delay_ms": 0}},
    )
    warm(table.endpoints["a"], 1.0)
    backup_failed = asyncio.Event()
    stubs["w"].script("a", Script(gate=backup_failed))
    stubs["v"].script(
        "b",
        Script(events=[], error=rpc_error(grpc.StatusCode.UNAVAILABLE), opens=backup_failed),
    )
    relay, _ = make_relay(table)

    responses = await collect(relay, request())

    assert responses[0].selection.endpoint == "a"
    assert responses[-1].HasField("completion")
    assert table.endpoints["b"].failures_total == 1


async def test_relay_records_ttft_and_time_per_token() -> None:
    class Ticking:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.010
            return self.now

    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    stubs["w"].script("a", Script(events=tokens(5)))
    relay, _ = make_relay(table, clock=Ticking())
    await collect(relay, request())
    stats = table.endpoints["a"].stats
    # Clock reads: start 10 ms, first token 20 ms, end 30 ms; 4 gaps after the first token.
    assert stats.ttft_ewma.value == pytest.approx(10.0)
    assert stats.tpot_ewma.value == pytest.approx(2.5)
    assert len(stats.ttft_window) == 1


def test_route_request_field_for_pinning_exists() -> None:
    assert router_pb2.RouteRequest(pinned_endpoint="a").pinned_endpoint == "a"
