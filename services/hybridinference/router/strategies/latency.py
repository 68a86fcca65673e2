"""Policies driven by observed latency: ``latency`` (fastest predicted) and ``cost`` (cheapest
that meets the model's TTFT SLO)."""

from __future__ import annotations

from collections.abc import Sequence

from hybridinference.router.endpoints import Endpoint
from hybridinference.router.strategies.base import Picker, expected_output_tokens
from hybridinference.router.v1 import router_pb2


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
        best_score = float("inf")
        for endpoint in candidates:
            # latency_score(), inlined: this loop runs over every candidate of every request.
            stats = endpoint.stats
            ttft = stats.ttft_ewma.value
            if ttft is None:
                return endpoint
            score = (ttft + (stats.tpot_ewma.value or 0.0) * tokens) * (endpoint.in_flight + 1)
            if score < best_score:
                best, best_score = endpoint, score
        return best


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
        best_price = 0.0
        best_in_flight = 0
        fastest = candidates[0]
        fastest_ttft = float("inf")
        for endpoint in candidates:
            stats = endpoint.stats
            p95 = stats.ttft_p95
            if p95 is None or p95 <= slo:
                # The blended price (prompt plus completion per 1M tokens).
                price = endpoint.price_prompt_per_1m + endpoint.price_completion_per_1m
                if (
                    best is None
                    or price < best_price
                    or (price == best_price and endpoint.in_flight < best_in_flight)
                ):
                    best, best_price, best_in_flight = endpoint, price, endpoint.in_flight
            ttft = stats.ttft_ewma.value
            if ttft is not None and ttft < fastest_ttft:
                fastest, fastest_ttft = endpoint, ttft
        return best if best is not None else fastest
