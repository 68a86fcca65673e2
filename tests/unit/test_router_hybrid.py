"""The hybrid policy and what it stands on: time-decayed statistics, the TTFT prediction, admission
control, hedging capped by the SLO and the cost of a hedge's loser. Clocks are injected and
samples are given by hand, so every decision below is deterministic."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ModelSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.hedging import hedge_delay_s
from hybridinference.router.prediction import predict
from hybridinference.router.stats import DecayingMean, TimedWindow
from hybridinference.router.strategies import Hybrid, Overloaded
from hybridinference.router.v1 import router_pb2
from support.polling import until
from support.router_fakes import Script, make_relay, make_table, tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fleet(clock: Clock) -> dict[str, Endpoint]:
    """Two local endpoints with 2 slots each, a cheap cloud endpoint and a dear one."""
    table, _ = make_table(
        {"w": ["l1", "l2", "cheap", "dear"]},
        {"m": ["l1", "l2", "cheap", "dear"]},
        prices={"cheap": (0.15, 0.6), "dear": (2.5, 10.0)},
        locality={"l1": "local", "l2": "local"},
    )
    endpoints = dict(table.endpoints)
    for local in ("l1", "l2"):
        endpoints[local].max_concurrency = 2
        measure(endpoints[local], clock, ttft_ms=40, hold_ms=200)
    measure(endpoints["cheap"], clock, ttft_ms=300, hold_ms=400)
    measure(endpoints["dear"], clock, ttft_ms=150, hold_ms=250)
    return endpoints


def measure(endpoint: Endpoint, clock: Clock, ttft_ms: float, hold_ms: float, n: int = 20) -> None:
    for _ in range(n):
        endpoint.stats.record_ttft(ttft_ms)
        endpoint.stats.record_unqueued(ttft_ms, hold_ms, clock())


def hybrid(clock: Clock, **options: Any) -> Hybrid:
    settings = ModelSettings(name="m", endpoints=["x"], strategy="hybrid", **options)
    return Hybrid(settings, random.Random(1), clock)


def pick(strategy: Hybrid, endpoints: dict[str, Endpoint]) -> list[str]:
    order = strategy.order(list(endpoints.values()), router_pb2.RouteRequest(model="m"))
    return [e.id for e in order]


def test_decaying_mean_loses_weight_with_time_not_only_with_samples() -> None:
    mean = DecayingMean(half_life_s=10)
    mean.add(100, now=0)
    assert mean.weight(0) == pytest.approx(1.0)
    assert mean.weight(10) == pytest.approx(0.5)
    # A sample after one half-life weighs twice the old one.
    mean.add(400, now=10)
    assert mean.value == pytest.approx((100 * 0.5 + 400) / 1.5)
    assert mean.age(25) == 15


def test_timed_window_forgets_samples_older_than_its_max_age() -> None:
    window = TimedWindow(max_age_s=20)
    for i in range(10):
        window.add(5000, now=i)
    window.add(100, now=15)
    assert window.quantile(0.9, now=15) == 5000
    # The tail of a burst long gone no longer counts.
    assert window.quantile(0.9, now=29.5) == 100
    assert window.quantile(0.9, now=40) is None


def test_prediction_adds_the_wait_of_the_live_queue() -> None:
    clock = Clock()
    local = fleet(clock)["l1"]
    assert predict(local, clock()).ttft_ms == pytest.approx(40)
    local.in_flight = 2  # both slots busy: the next one waits for the first to free
    # One slot frees every hold / capacity = 100 ms.
    assert predict(local, clock()).queue_wait_ms == pytest.approx(100)
    local.in_flight = 5
    assert predict(local, clock()).ttft_ms == pytest.approx(40 + 4 * 100)
    # The provider's probe may know of more: another router's requests count too.
    local.in_flight = 1
    local.stats.record_probe(waiting=1, running=2, kv_cache_usage=0.5, own_in_flight=1)
    # Ours 1 + 2 elsewhere on 2 slots: two ahead of the next request.
    assert predict(local, clock()).queue_wait_ms == pytest.approx(200)
    # A probe taken while our own requests ran says nothing once they are done.
    local.stats.record_probe(waiting=1, running=2, kv_cache_usage=0.5, own_in_flight=3)
    local.in_flight = 0
    assert predict(local, clock()).queue_wait_ms == 0


def test_whole_replies_alone_bound_the_prediction() -> None:
    clock = Clock()
    table, _ = make_table({"w": ["a"]}, {"m": ["a"]})
    a = table.endpoints["a"]
    assert predict(a, clock()).ttft_ms == 0  # unmeasured: optimistic
    # Unary calls record how long they held a slot, never a TTFT.
    a.stats.record_unqueued(None, 300, clock())
    assert predict(a, clock()).ttft_ms == pytest.approx(300)
    assert predict(a, clock()).tail_ms == pytest.approx(300)


def test_capacity_is_learned_from_a_probe_that_reports_a_queue() -> None:
    clock = Clock()
    cloud = fleet(clock)["cheap"]
    assert cloud.capacity is None
    cloud.stats.record_probe(waiting=3, running=8, kv_cache_usage=0.9)
    assert cloud.capacity == 8


def test_locals_fill_first_then_overflow_goes_to_the_cheapest_that_meets_the_slo() -> None:
    clock = Clock()
    endpoints = fleet(clock)
    strategy = hybrid(clock, ttft_slo_ms=800)
    assert pick(strategy, endpoints)[0] == "l1"
    endpoints["l1"].in_flight = 1
    assert pick(strategy, endpoints)[0] == "l2"  # the same predicted TTFT, fewer requests
    endpoints["l2"].in_flight = 2
    endpoints["l1"].in_flight = 2
    # A short local queue (predicted 40 + 100 ms) is still within half the SLO.
    assert pick(strategy, endpoints)[0] in {"l1", "l2"}
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 6
    # Locals predicted at 40 + 5 * 100 ms: past their useful queue; the cheap cloud meets
    # the SLO, and backups are ordered by predicted TTFT (dear first).
    assert pick(strategy, endpoints) == ["cheap", "dear", "l1", "l2"]


def test_overflow_skips_an_endpoint_whose_tail_misses_the_slo() -> None:
    clock = Clock()
    endpoints = fleet(clock)
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 9
    for _ in range(10):  # the cheap endpoint's p90 is now in its 2.5 s tail
        endpoints["cheap"].stats.record_unqueued(2500, None, clock())
    assert pick(hybrid(clock, ttft_slo_ms=800), endpoints)[0] == "dear"


def test_a_burst_does_not_keep_locals_out_once_their_queue_is_gone() -> None:
    clock = Clock()
    endpoints = fleet(clock)
    strategy = hybrid(clock, ttft_slo_ms=800)
    local = endpoints["l1"]
    # A burst: queued requests saw first tokens of several seconds...
    for _ in range(64):
        local.stats.record_ttft(3000)
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 9
    assert pick(strategy, endpoints)[0] == "cheap"
    # ...and the moment the queue drains, the local endpoints are back: no window of stale
    # percentiles stands in the way (the cost policy's p95 would still read 3 s here).
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 0
    assert local.stats.ttft_p95 == 3000
    assert pick(strategy, endpoints)[0] == "l1"


def test_a_stale_endpoint_kept_out_by_old_numbers_is_probed() -> None:
    clock = Clock()
    endpoints = fleet(clock)
    dear = endpoints["dear"]
    for _ in range(64):
        dear.stats.record_unqueued(5000, None, clock())
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 9
    strategy = hybrid(clock, ttft_slo_ms=800, hybrid={"price_tolerance": 100})
    assert pick(strategy, endpoints)[0] == "cheap"  # dear's fresh tail misses the SLO
    # Nobody sends it traffic; a half-life later its numbers are a memory, and since they are
    # what keeps it out, it gets the next request as a probe.
    clock.now += 10
    assert predict(dear, clock()).stale
    assert pick(strategy, endpoints)[0] == "dear"
    # One probe at a time.
    dear.in_flight = 1
    assert pick(strategy, endpoints)[0] == "cheap"
    dear.in_flight = 0
    # The probe came back fast. The old tail still sits in the window (two half-lives), so no
    # more probes go there for now...
    dear.stats.record_unqueued(150, None, clock())
    assert not predict(dear, clock()).stale
    assert predict(dear, clock()).tail_ms == 5000
    assert pick(strategy, endpoints)[0] == "cheap"
    # ...until it ages out: then the probe's sample is the tail, and the dear endpoint (price
    # tolerance 100: as good as the cheap one) wins on its lower predicted tail.
    clock.now += 10.5
    assert predict(dear, clock()).tail_ms == 150
    assert pick(strategy, endpoints)[0] == "dear"


def test_nothing_meets_the_slo_raises_overloaded_with_a_retry_hint() -> None:
    clock = Clock()
    endpoints = {k: v for k, v in fleet(clock).items() if k in {"l1", "l2"}}
    endpoints["l1"].in_flight = endpoints["l2"].in_flight = 12
    with pytest.raises(Overloaded) as caught:
        pick(hybrid(clock, ttft_slo_ms=800), endpoints)
    # The soonest local queue frees a slot in (12 - 2 + 1) * 100 ms.
    assert caught.value.retry_after_s == pytest.approx(1.1)


def test_hedge_delay_is_the_endpoints_p90_capped_by_the_slo_and_the_slo_without_samples() -> None:
    table, _ = make_table(
        {"w": ["a"]}, {"m": ["a"]}, options={"m": {"ttft_slo_ms": 500, "hedging": True}}
    )
    a = table.endpoints["a"]
    # Too few samples for a p90 yet: the SLO.
    assert hedge_delay_s(table.models["m"], a, 0.0) == pytest.approx(0.5)
    for _ in range(20):
        a.stats.record_ttft(200)
    assert hedge_delay_s(table.models["m"], a, 0.0) == pytest.approx(0.2)
    for _ in range(20):
        a.stats.record_ttft(3000)
    assert hedge_delay_s(table.models["m"], a, 0.0) == pytest.approx(0.5)


def test_hedge_delay_of_a_queueing_endpoint_is_its_p90_given_the_queue() -> None:
    clock = Clock()
    endpoints = fleet(clock)
    local = endpoints["l1"]
    model = make_table(
        {"w": ["x"]}, {"m": ["x"]}, options={"m": {"ttft_slo_ms": 800, "hedging": True}}
    )[0].models["m"]
    # A free slot: the unqueued p90 (40 ms).
    assert hedge_delay_s(model, local, clock()) == pytest.approx(0.04)
    # Three ahead on two slots: 40 ms plus two slot turns of 100 ms; a request waiting as
    # predicted is not hedged early (the retry budget is kept for the real tails).
    local.in_flight = 3
    assert hedge_delay_s(model, local, clock()) == pytest.approx(0.24)
    local.in_flight = 30
    assert hedge_delay_s(model, local, clock()) == pytest.approx(0.8)  # capped by the SLO


def request() -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id="r", model="m", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
    )


def single_slot_local(options: dict[str, Any]) -> tuple[Any, Any, Endpoint]:
    table, stubs = make_table(
        {"w": ["gpu"]},
        {"m": ["gpu"]},
        options={"m": {"strategy": "hybrid", "ttft_slo_ms": 100, **options}},
        locality={"gpu": "local"},
    )
    gpu = table.endpoints["gpu"]
    gpu.max_concurrency = 1
    for _ in range(20):
        gpu.stats.record_unqueued(50, 200, time.monotonic())
    relay, _ = make_relay(table)
    return relay, stubs, gpu


async def test_admission_refuses_with_resource_exhausted_and_retry_after() -> None:
    relay, stubs, gpu = single_slot_local({"hybrid": {"admission_wait_ms": 0}})
    gate = asyncio.Event()
    stubs["w"].script("gpu", Script(gate=gate), Script())
    first = asyncio.create_task(relay.route_unary(request(), lambda: None))
    await until(lambda: gpu.in_flight == 1, 5, "the first request to hold the only slot")
    # Predicted 50 + 200 ms with the slot taken: past the 100 ms SLO, and no other endpoint.
    with pytest.raises(ServiceError) as caught:
        await relay.route_unary(request(), lambda: None)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after_s == pytest.approx(0.2)
    gate.set()
    assert (await first).content == "t0 t1 t2 "


async def test_admission_queues_until_a_slot_frees() -> None:
    relay, stubs, gpu = single_slot_local({"hybrid": {"admission_wait_ms": 30_000}})
    gate = asyncio.Event()
    stubs["w"].script("gpu", Script(gate=gate), Script())
    first = asyncio.create_task(relay.route_unary(request(), lambda: None))
    await until(lambda: gpu.in_flight == 1, 5, "the first request to hold the only slot")
    second = asyncio.create_task(relay.route_unary(request(), lambda: None))
    await until(lambda: relay._admission.waiting("m") == 1, 5, "the second to queue")
    assert gpu.requests_total == 1
    gate.set()
    replies = await asyncio.gather(first, second)
    assert [r.selection.endpoint for r in replies] == ["gpu", "gpu"]
    assert relay._admission.waiting("m") == 0


async def test_a_hedges_loser_is_cancelled_and_its_prompt_cost_counted() -> None:
    table, stubs = make_table(
        {"w": ["a"], "v": ["b"]},
        {"m": ["a", "b"]},
        prices={"a": (4.0, 8.0), "b": (1.0, 2.0)},
        options={
            "m": {
                "hedging": True,
                "hedge_min_delay_ms": 0,
                "strategy": "weighted",
                "weights": {"a": 100, "b": 1},
            }
        },
    )
    for _ in range(20):
        table.endpoints["a"].stats.record_ttft(1.0)
    stubs["w"].script("a", Script(events=[], hang=True))
    stubs["v"].script("b", Script(events=tokens(2, prompt_tokens=1_000_000)))
    relay, _ = make_relay(table)
    responses = [r async for r in relay.route(request(), lambda: None)]
    assert responses[0].selection.endpoint == "b"
    assert stubs["w"].calls[0][2].cancelled
    # b's own cost (1M prompt at $1, 2 completion at $2 per 1M) plus a's billed prompt ($4).
    assert responses[-1].completion.cost_usd == pytest.approx(1.0 + 4e-6 + 4.0)
    assert table.endpoints["a"].wasted_usd == pytest.approx(4.0)
