"""Round robin ordering and the strategy factory."""

from __future__ import annotations

import pytest

from hybridinference.router.strategies import RoundRobin, create_strategy
from hybridinference.router.v1 import router_pb2
from support.router_fakes import make_table


def test_round_robin_rotates_first_pick_and_keeps_fallback_order() -> None:
    table, _ = make_table({"w": ["a", "b", "c"]}, {"m": ["a", "b", "c"]})
    candidates = table.models["m"].endpoints
    strategy = RoundRobin()
    request = router_pb2.RouteRequest(model="m")
    orders = [[e.id for e in strategy.order(candidates, request)] for _ in range(4)]
    assert orders == [["a", "b", "c"], ["b", "a", "c"], ["c", "a", "b"], ["a", "b", "c"]]


def test_round_robin_handles_empty_and_shrinking_candidates() -> None:
    table, _ = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    a, b = table.models["m"].endpoints
    strategy = RoundRobin()
    request = router_pb2.RouteRequest(model="m")
    assert strategy.order([], request) == []
    assert strategy.order([a, b], request) == [a, b]
    assert strategy.order([a], request) == [a]


def test_factory_gives_independent_instances_per_model() -> None:
    table, _ = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    candidates = table.models["m"].endpoints
    request = router_pb2.RouteRequest(model="m")
    first, second = create_strategy("round_robin"), create_strategy("round_robin")
    assert first is not second
    first.order(candidates, request)
    assert [e.id for e in second.order(candidates, request)] == ["a", "b"]


def test_factory_rejects_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy 'fastest'"):
        create_strategy("fastest")


# The policies beyond round robin. Each takes its options and a seeded Random, so every choice
# below is deterministic.

import random  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

from hybridinference.common.settings import ModelSettings  # noqa: E402
from hybridinference.common.settings_base import STRATEGY_NAMES  # noqa: E402
from hybridinference.common.v1 import chat_pb2  # noqa: E402
from hybridinference.router.endpoints import Endpoint  # noqa: E402
from hybridinference.router.strategies import IMPLEMENTED, NAMES, Strategy  # noqa: E402


def policy(name: str, ids: list[str], rng_seed: int = 1, **options: Any) -> Strategy:
    settings = ModelSettings(name="m", endpoints=ids, strategy=name, **options)
    return create_strategy(name, settings, random.Random(rng_seed))


def endpoints(
    ids: list[str],
    prices: dict[str, tuple[float, float]] | None = None,
    locality: dict[str, str] | None = None,
) -> list[Endpoint]:
    table, _ = make_table({"w": ids}, {"m": ids}, prices=prices, locality=locality)
    return list(table.models["m"].endpoints)


def first(strategy: Strategy, candidates: list[Endpoint], request: Any = None) -> str:
    return strategy.order(candidates, request or router_pb2.RouteRequest(model="m"))[0].id


def ttft(endpoint: Endpoint, *samples: float) -> None:
    for sample in samples:
        endpoint.stats.record_ttft(sample)


def test_every_configured_strategy_name_has_an_implementation() -> None:
    # The names come from one place (common/settings_base.py): the factory covers exactly them.
    assert sorted(IMPLEMENTED) == sorted(STRATEGY_NAMES) == sorted(NAMES)
    for name in NAMES:
        ordered = policy(name, ["a"]).order(endpoints(["a", "b"]), router_pb2.RouteRequest())
        assert sorted(e.id for e in ordered) == ["a", "b"]


def test_pickers_keep_configured_fallback_order_after_the_pick() -> None:
    a, b, c = endpoints(["a", "b", "c"], prices={"a": (5, 5), "b": (1, 1), "c": (3, 3)})
    order = policy("cost", ["a", "b", "c"], exploration=0).order(
        [a, b, c], router_pb2.RouteRequest()
    )
    assert [e.id for e in order] == ["b", "a", "c"]


def test_weighted_is_smooth_and_proportional() -> None:
    cands = endpoints(["a", "b", "c"])
    strategy = policy("weighted", ["a", "b", "c"], weights={"a": 5, "b": 1})
    picks = [first(strategy, cands) for _ in range(7)]
    # nginx's smooth WRR: a's five turns are spread out, not back to back.
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]
    assert Counter(first(strategy, cands) for _ in range(700)) == {"a": 500, "b": 100, "c": 100}


def test_cost_picks_cheapest_meeting_slo_else_fastest() -> None:
    local, cheap, dear = endpoints(
        ["local", "cheap", "dear"], prices={"cheap": (1, 2), "dear": (10, 30)}
    )
    strategy = policy("cost", ["x"], ttft_slo_ms=100, exploration=0)
    # Unmeasured endpoints count as meeting the SLO, so the free one is tried first.
    assert first(strategy, [local, cheap, dear]) == "local"
    ttft(local, *[500] * 10)  # p95 500 ms: misses the SLO
    ttft(cheap, *[80] * 10)
    ttft(dear, *[20] * 10)
    assert first(strategy, [local, cheap, dear]) == "cheap"
    ttft(cheap, *[400] * 10)
    assert first(strategy, [local, cheap, dear]) == "dear"
    ttft(dear, *[900] * 64)  # nobody meets it: the fastest by EWMA
    assert first(strategy, [local, cheap, dear]) == "cheap"


def test_cost_breaks_price_ties_by_in_flight() -> None:
    a, b = endpoints(["a", "b"])
    a.in_flight = 2
    assert first(policy("cost", ["x"], exploration=0), [a, b]) == "b"


def test_latency_prefers_lowest_predicted_time_scaled_by_load() -> None:
    fast, slow = endpoints(["fast", "slow"])
    strategy = policy("latency", ["x"], exploration=0, expected_output_tokens=10)
    ttft(fast, 50)
    fast.stats.record_tpot(5)  # 50 + 5*10 = 100 ms
    ttft(slow, 120)
    slow.stats.record_tpot(1)  # 120 + 10 = 130 ms
    assert first(strategy, [fast, slow]) == "fast"
    fast.in_flight = 1  # 100 * 2 = 200 > 130
    assert first(strategy, [fast, slow]) == "slow"
    # max_tokens replaces the expected output: long answers favour the low time-per-token one.
    fast.in_flight = 0
    long = router_pb2.RouteRequest(sampling=chat_pb2.SamplingParams(max_tokens=100))
    assert first(strategy, [fast, slow], long) == "slow"


def test_latency_tries_unmeasured_endpoints_and_explores() -> None:
    a, b = endpoints(["a", "b"])
    ttft(a, 10)
    assert first(policy("latency", ["x"], exploration=0), [a, b]) == "b"
    ttft(b, 1000)
    strategy = policy("latency", ["x"], exploration=0.2, rng_seed=3)
    picks = Counter(first(strategy, [a, b]) for _ in range(1000))
    # 20% random picks, half of them land on the slow one.
    assert 60 <= picks["b"] <= 140


def test_least_load_is_power_of_two_choices() -> None:
    cands = endpoints(["a", "b", "c", "d"])
    loads = {"a": 0, "b": 5, "c": 5, "d": 5}
    for e in cands:
        e.in_flight = loads[e.id]
    strategy = policy("least_load", ["x"])
    picks = Counter(first(strategy, cands) for _ in range(600))
    # "a" wins whenever it is one of the two sampled: 3 of the 6 pairs.
    assert 250 <= picks["a"] <= 350
    # Provider-reported queue and KV-cache use count too.
    a, b = endpoints(["a", "b"])
    a.stats.waiting = 3
    b.in_flight = 2
    assert first(strategy, [a, b]) == "b"
    b.stats.kv_cache_usage = 0.9  # 2 + 1.8 > 3
    assert first(strategy, [a, b]) == "a"


def affinity_request(prefix: str) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        messages=[
            chat_pb2.ChatMessage(role="system", content=prefix),
            chat_pb2.ChatMessage(role="user", content="question"),
        ]
    )


def test_prefix_affinity_is_sticky_spread_and_stable() -> None:
    ids = ["r1", "r2", "r3", "r4"]
    cands = endpoints(ids)
    strategy = policy("prefix_affinity", ids, affinity_prefix_chars=32)
    homes = {p: first(strategy, cands, affinity_request(f"prompt {p}")) for p in range(200)}
    # Same prefix, same replica; the suffix past the prefix does not matter.
    assert all(
        first(strategy, cands, affinity_request(f"prompt {p}")) == homes[p] for p in range(20)
    )
    assert set(Counter(homes.values())) == set(ids)
    assert max(Counter(homes.values()).values()) < 90
    # Removing a replica moves only the prefixes it owned.
    without = [c for c in cands if c.id != "r2"]
    moved = [
        p
        for p in range(200)
        if first(strategy, without, affinity_request(f"prompt {p}")) != homes[p]
    ]
    assert all(homes[p] == "r2" for p in moved)


def test_prefix_affinity_spills_when_home_is_overloaded() -> None:
    ids = ["r1", "r2", "r3"]
    cands = endpoints(ids)
    strategy = policy("prefix_affinity", ids, affinity_load_factor=1.25)
    req = affinity_request("shared system prompt")
    home = first(strategy, cands, req)
    by_id = {c.id: c for c in cands}
    by_id[home].in_flight = 4  # bound = ceil(1.25 * 5 / 3) = 3
    spilled = first(strategy, cands, req)
    assert spilled != home
    # Back within the bound (every replica busy alike): the prefix goes home again.
    for c in cands:
        c.in_flight = 1  # bound = ceil(1.25 * 4 / 3) = 2
    assert first(strategy, cands, req) == home


def test_local_first_overflows_on_capacity_queue_or_ttft_and_returns_with_hysteresis() -> None:
    local, cloud_cheap, cloud_fast = endpoints(
        ["local", "cloud-a", "cloud-b"], locality={"local": "local"}
    )
    ttft(cloud_cheap, 300)
    ttft(cloud_fast, 100)
    strategy = policy(
        "local_first",
        ["x"],
        exploration=0,
        local_first={
            "max_waiting": 4,
            "max_ttft_ms": 500,
            "max_in_flight": 2,
            "recover_ratio": 0.5,
        },
    )
    cands = [cloud_cheap, local, cloud_fast]
    assert first(strategy, cands) == "local"
    # At the in-flight limit the overflow is immediate, and so is the return.
    local.in_flight = 2
    assert first(strategy, cands) == "cloud-b"
    local.in_flight = 1
    assert first(strategy, cands) == "local"
    # Queue above max_waiting: overflow until it is at most half of it.
    local.stats.waiting = 5
    assert first(strategy, cands) == "cloud-b"
    local.stats.waiting = 3
    assert first(strategy, cands) == "cloud-b"  # hysteresis: 3 > 4 * 0.5
    local.stats.waiting = 2
    assert first(strategy, cands) == "local"
    # TTFT EWMA at the threshold: overflow until it is back under 250 ms.
    ttft(local, 600)
    assert first(strategy, cands) == "cloud-b"
    local.stats.ttft_ewma.value = 300
    assert first(strategy, cands) == "cloud-b"
    local.stats.ttft_ewma.value = 200
    assert first(strategy, cands) == "local"


def test_local_first_explores_an_overflowing_local_and_copes_without_cloud() -> None:
    local, cloud = endpoints(["local", "cloud"], locality={"local": "local"})
    ttft(local, 2000)
    local.in_flight = 1  # busy, so no idle probe: only exploration sends it traffic
    strategy = policy("local_first", ["x"], exploration=0.5, rng_seed=2)
    picks = Counter(first(strategy, [local, cloud]) for _ in range(200))
    assert 60 <= picks["local"] <= 140
    # Once idle, an overflowing local endpoint gets the next request as a probe.
    local.in_flight = 0
    assert first(policy("local_first", ["x"], exploration=0), [local, cloud]) == "local"
    only_local = endpoints(["l1", "l2"], locality={"l1": "local", "l2": "local"})
    for e in only_local:
        ttft(e, 2000)
    only_local[0].in_flight = 3
    assert first(policy("local_first", ["x"], exploration=0), only_local) == "l2"
