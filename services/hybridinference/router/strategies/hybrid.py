"""``hybrid``: the recommended policy for fleets of local and cloud endpoints.

Every decision reads each candidate's *predicted* time to first token now (prediction.py: its
unqueued TTFT and tail from time-decayed statistics, plus the wait its live queue implies), not a
window percentile that stops moving once traffic goes elsewhere. In order:

1. Probe: a stale endpoint (no fresh samples) that its old numbers keep out of rotation gets the
   request when it has nothing in flight, so its numbers recover (one probe at a time; hedging
   covers the probe if the endpoint is still slow).
2. Local first: the local endpoint with the lowest predicted TTFT while its predicted tail stays
   within ``local_queue_slo_fraction`` of the SLO: free slots, then a short queue.
3. Overflow: the cheapest endpoint whose predicted tail meets the SLO; endpoints priced within
   ``price_tolerance`` of it share the overflow, lowest predicted tail first.
4. Nothing meets the SLO: ``Overloaded`` (the relay queues the request briefly, then answers 429
   with Retry-After) instead of piling onto a saturated endpoint.

The rest of the order (retries and hedge backups) is the other candidates by predicted TTFT, so a
backup goes to the endpoint most likely to answer quickly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from hybridinference.common.settings import ModelSettings
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.prediction import Raw, predict_raw
from hybridinference.router.strategies.base import Overloaded, Picker
from hybridinference.router.v1 import router_pb2


class Hybrid(Picker):
    name = "hybrid"

    def __init__(
        self,
        options: ModelSettings,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(options, rng)
        self._clock = clock

    def order(
        self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest
    ) -> list[Endpoint]:
        if not candidates:
            return []
        now = self._clock()
        quantile = self.options.hybrid.tail_quantile
        predictions = [predict_raw(e, now, quantile) for e in candidates]
        first = self._choose(candidates, predictions)
        # Retries and hedge backups: the others, likeliest quick first token first.
        rest = sorted([(p[0], i) for i, p in enumerate(predictions) if i != first])
        return [candidates[first], *(candidates[i] for _, i in rest)]

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        return self.order(candidates, request)[0]

    def _choose(self, candidates: Sequence[Endpoint], predictions: list[Raw]) -> int:
        """The index of the candidate to try first (see the module docstring)."""
        slo = self.options.ttft_slo_ms
        hybrid = self.options.hybrid
        local_budget = slo * hybrid.local_queue_slo_fraction
        best_local = -1
        best_local_key = (0.0, 0)
        cheapest = float("inf")
        # (price, predicted tail, index) of candidates whose predicted tail meets the SLO:
        # cloud ones, and local ones past their useful queue (those rank after any cloud one:
        # a free local slot beats a paid one, a long local queue does not).
        cloud: list[tuple[float, float, int]] = []
        queued_local: list[tuple[float, float, int]] = []
        for i, (ttft, tail, _, load, capacity, stale) in enumerate(predictions):
            endpoint = candidates[i]
            if (
                stale
                and tail > slo
                and endpoint.in_flight == 0
                and (capacity is None or load < capacity)
            ):
                # Kept out by numbers nobody has refreshed: this request re-measures it.
                return i
            local = endpoint.locality == "local"
            if local and tail <= local_budget:
                # Lowest predicted TTFT; between equals, the one with fewer requests.
                key = (ttft, load)
                if best_local < 0 or key < best_local_key:
                    best_local, best_local_key = i, key
            elif tail <= slo:
                price = endpoint.price_prompt_per_1m + endpoint.price_completion_per_1m
                if local:
                    queued_local.append((price, tail, i))
                else:
                    cloud.append((price, tail, i))
                    if price < cheapest:
                        cheapest = price
        if best_local >= 0:
            return best_local
        if cloud:
            ceiling = cheapest * hybrid.price_tolerance
            return min((f for f in cloud if f[0] <= ceiling), key=lambda f: f[1])[2]
        if queued_local:
            return min(queued_local, key=lambda f: f[1])[2]
        waits = [p[2] for p in predictions if p[2] > 0]
        retry_after_s = min(waits) / 1000 if waits else slo / 1000
        raise Overloaded(
            f"every endpoint's predicted p{hybrid.tail_quantile * 100:.0f} TTFT exceeds "
            f"{slo:.0f} ms",
            retry_after_s,
        )
