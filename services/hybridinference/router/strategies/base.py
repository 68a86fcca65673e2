"""The one strategy interface, and the shared shape most policies have: pick one, fall back in
the configured order.

Strategies are pure decision code over the endpoints' live state: no I/O, no awaits, O(n) per
request in the number of candidates (100 endpoints must decide in well under 50 µs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from hybridinference.common.settings import ModelSettings
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.v1 import router_pb2


class Overloaded(Exception):
    """Raised by a strategy's ``order`` when no candidate can serve the request within the
    model's SLO now; the relay then applies admission control (wait, then 429)."""

    def __init__(self, why: str, retry_after_s: float | None) -> None:
        super().__init__(why)
        self.retry_after_s = retry_after_s


class Strategy(Protocol):
    name: str

    def order(
        self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest
    ) -> list[Endpoint]:
        """Returns the try order: the first is the pick, the rest are fallbacks."""
        ...


class Picker:
    """A strategy that chooses the first endpoint; the fallbacks keep the configured order,
    which is the model's ordered fallback list."""

    name = ""

    def __init__(self, options: ModelSettings, rng: random.Random) -> None:
        self.options = options
        self.rng = rng

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        raise NotImplementedError

    def order(
        self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest
    ) -> list[Endpoint]:
        if not candidates:
            return []
        if len(candidates) == 1:
            return [candidates[0]]
        first = self.pick(candidates, request)
        return pick_first(candidates, first)

    def exploring(self) -> bool:
        """True for the small share of requests sent off-policy to re-measure endpoints."""
        return self.options.exploration > 0 and self.rng.random() < self.options.exploration


def pick_first(candidates: Sequence[Endpoint], first: Endpoint) -> list[Endpoint]:
    """``first``, then the other candidates in their configured order (C-level slicing: this
    runs on every request)."""
    index = candidates.index(first)
    return [first, *candidates[:index], *candidates[index + 1 :]]


def expected_output_tokens(request: router_pb2.RouteRequest, options: ModelSettings) -> int:
    if request.HasField("sampling") and request.sampling.HasField("max_tokens"):
        return max(1, request.sampling.max_tokens)
    return options.expected_output_tokens


def latency_score(endpoint: Endpoint, output_tokens: int) -> float:
    """Predicted time of a request here: TTFT EWMA plus time per token, scaled by the requests
    already in flight (a "peak EWMA": a fast endpoint still gets busy, so load spreads).
    An unmeasured endpoint scores 0, so it is tried and measured first."""
    stats = endpoint.stats
    ttft = stats.ttft_ewma.value
    if ttft is None:
        return 0.0
    tpot = stats.tpot_ewma.value or 0.0
    return (ttft + tpot * output_tokens) * (endpoint.in_flight + 1)
