"""Load-aware policies: ``least_load`` (power of two choices) and ``local_first`` (local vLLM until
it is saturated, then overflow to the cloud, with hysteresis on the way back)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hybridinference.common.settings import ModelSettings
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.strategies.base import Picker, expected_output_tokens, latency_score
from hybridinference.router.v1 import router_pb2

# A nearly full KV cache means preemptions soon; weigh it like two queued requests.
KV_CACHE_WEIGHT = 2.0


def load(endpoint: Endpoint) -> float:
    """Live in-flight requests (ours) plus the provider's queue and KV-cache use (from probes)."""
    stats = endpoint.stats
    return endpoint.in_flight + stats.waiting + KV_CACHE_WEIGHT * stats.kv_cache_usage


class LeastLoad(Picker):
    """Power of two choices: the less loaded of two random candidates. Nearly as good as the
    global minimum and, unlike it, does not send a burst of requests to the same endpoint
    between two probes."""

    name = "least_load"

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        first, second = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        return a if load(a) <= load(b) else b


class LocalFirst(Picker):
    """Local endpoints while they have room; cloud endpoints (lowest predicted latency) when every
    local one is saturated.

    A local endpoint overflows when its reported queue exceeds ``max_waiting`` or its TTFT EWMA
    reaches ``max_ttft_ms``; it takes traffic again only once both are below ``recover_ratio`` of
    their thresholds (hysteresis, so it does not flap). ``max_in_flight`` is a plain capacity gate
    on the router's own live count: at the limit, the next request goes elsewhere at once.

    An overflowing local endpoint that has gone idle (nothing in flight, nothing queued) gets the
    next request as a probe, one at a time: its TTFT EWMA only moves with traffic, and without
    probes a burst that pushed it over would keep it in overflow long after the burst is gone.
    """

    name = "local_first"

    def __init__(self, options: ModelSettings, rng: random.Random) -> None:
        super().__init__(options, rng)
        self._overflowing: set[str] = set()

    def overflowing(self, endpoint: Endpoint) -> bool:
        """Whether the endpoint is in overflow now, updating its hysteresis state."""
        limits = self.options.local_first
        stats = endpoint.stats
        ttft = stats.ttft_ewma.value or 0.0
        if endpoint.id in self._overflowing:
            ratio = limits.recover_ratio
            if stats.waiting <= limits.max_waiting * ratio and ttft <= limits.max_ttft_ms * ratio:
                self._overflowing.discard(endpoint.id)
                return False
            return True
        if stats.waiting > limits.max_waiting or ttft >= limits.max_ttft_ms:
            self._overflowing.add(endpoint.id)
            return True
        return False

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        max_in_flight = self.options.local_first.max_in_flight
        cloud: list[Endpoint] = []
        best_local: Endpoint | None = None
        best_local_load = 0.0
        saturated_local: Endpoint | None = None
        idle_local: Endpoint | None = None
        for endpoint in candidates:
            if endpoint.locality != "local":
                cloud.append(endpoint)
                continue
            at_capacity = max_in_flight is not None and endpoint.in_flight >= max_in_flight
            if at_capacity or self.overflowing(endpoint):
                if not at_capacity and saturated_local is None:
                    saturated_local = endpoint
                if not endpoint.in_flight and not endpoint.stats.waiting and idle_local is None:
                    idle_local = endpoint
                continue
            endpoint_load = load(endpoint)
            if best_local is None or endpoint_load < best_local_load:
                best_local, best_local_load = endpoint, endpoint_load
        if best_local is not None:
            return best_local
        if idle_local is not None:
            return idle_local
        if not cloud:
            # Only local endpoints, all saturated: the least loaded still beats failing.
            return min(candidates, key=load)
        if saturated_local is not None and self.exploring():
            # Overflowing on TTFT gets no new samples without traffic: re-measure now and then.
            return saturated_local
        tokens = expected_output_tokens(request, self.options)
        best = cloud[0]
        best_score = float("inf")
        for endpoint in cloud:
            score = latency_score(endpoint, tokens)
            if score < best_score:
                best, best_score = endpoint, score
        return best
