"""Policies driven by observed latency: ``latency`` (fastest predicted) and ``cost`` (cheapest
that meets the model's TTFT SLO)."""

from __future__ import annotations

from collections.abc import Sequence

from hybridinference.router.v1 import router_pb2
from services.router.endpoints import Endpoint
from services.router.strategies.base import Picker, expected_output_tokens, latency_score


class Latency(Picker):
    """Lowest predicted latency (TTFT and time-per-token EWMAs, scaled by in-flight requests).

    A few requests (``exploration``) go to a random endpoint: EWMAs only move when an endpoint
    gets traffic, so without them a slow endpoint that recovered would never be noticed.
    """

    name = "latency"

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        if self.exploring():
            return candidates[self.rng.randrange(len(candidates))]
        tokens = expected_output_tokens(request, self.options)
        best = candidates[0]
        best_score = latency_score(best, tokens)
        for endpoint in candidates[1:]:
            score = latency_score(endpoint, tokens)
            if score < best_score:
                best, best_score = endpoint, score
        return best


def blended_price(endpoint: Endpoint) -> float:
    return endpoint.price_prompt_per_1m + endpoint.price_completion_per_1m


class Cost(Picker):
    """Cheapest endpoint whose observed p95 TTFT meets ``ttft_slo_ms`` (an endpoint without
    samples yet counts as meeting it, so it gets measured); among equal prices the one with
    fewer requests in flight. When none meets the SLO, the fastest by TTFT EWMA.

    Exploration sends a few requests to a random endpoint so one that missed the SLO gets new
    samples and can win its traffic back once it recovers.
    """

    name = "cost"

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        if self.exploring():
            return candidates[self.rng.randrange(len(candidates))]
        slo = self.options.ttft_slo_ms
        best: Endpoint | None = None
        best_key = (0.0, 0)
        fastest = candidates[0]
        fastest_ttft = float("inf")
        for endpoint in candidates:
            stats = endpoint.stats
            p95 = stats.ttft_p(0.95)
            if p95 is None or p95 <= slo:
                key = (blended_price(endpoint), endpoint.in_flight)
                if best is None or key < best_key:
                    best, best_key = endpoint, key
            ttft = stats.ttft_ewma.value
            if ttft is not None and ttft < fastest_ttft:
                fastest, fastest_ttft = endpoint, ttft
        return best if best is not None else fastest
