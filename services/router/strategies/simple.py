"""Routing strategies: one interface, one factory keyed by ModelSettings.strategy.

A strategy only orders candidates; filtering (health, later circuit breakers) happens before it
and the relay walks the returned order, so strategies stay pure and easy to test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hybridinference.router.v1 import router_pb2
from services.router.endpoints import Endpoint


class Strategy(Protocol):
    name: str

    def order(
        self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest
    ) -> list[Endpoint]:
        """Returns the try order: the first is the pick, the rest are fallbacks."""
        ...


class RoundRobin:
    """Rotates the first pick across candidates; the rest keep their configured fallback order."""

    name = "round_robin"

    def __init__(self) -> None:
        # One counter per model (one instance per model), so models do not skew each other.
        self._next = 0

    def order(
        self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest
    ) -> list[Endpoint]:
        if not candidates:
            return []
        start = self._next % len(candidates)
        self._next += 1
        first = candidates[start]
        return [first, *(c for i, c in enumerate(candidates) if i != start)]


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    RoundRobin.name: RoundRobin,
}


def create_strategy(name: str) -> Strategy:
    """A fresh strategy instance for one model."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown routing strategy {name!r}; known: {sorted(STRATEGIES)}"
        ) from None
    return factory()
