"""Round robin ordering and the strategy factory."""

from __future__ import annotations

import pytest

from hybridinference.router.v1 import router_pb2
from services.router.strategies import RoundRobin, create_strategy
from tests.unit.test_router_fakes import make_table


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
