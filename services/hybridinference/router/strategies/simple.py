"""Load-oblivious policies: round robin and smooth weighted round robin."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hybridinference.common.settings import ModelSettings
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.strategies.base import Picker
from hybridinference.router.v1 import router_pb2


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
        return [candidates[start], *candidates[:start], *candidates[start + 1 :]]


class Weighted(Picker):
    """Smooth weighted round robin (as in nginx): deterministic, and spreads each endpoint's
    share evenly over time instead of in bursts. Weights come from the model's ``weights``."""

    name = "weighted"

    def __init__(self, options: ModelSettings, rng: random.Random) -> None:
        super().__init__(options, rng)
        self._current: dict[str, float] = {}

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        weights = self.options.weights
        current = self._current
        total = 0.0
        best = candidates[0]
        best_value = float("-inf")
        for endpoint in candidates:
            weight = weights.get(endpoint.id, 1.0)
            total += weight
            value = current.get(endpoint.id, 0.0) + weight
            current[endpoint.id] = value
            if value > best_value:
                best, best_value = endpoint, value
        current[best.id] = best_value - total
        return best
