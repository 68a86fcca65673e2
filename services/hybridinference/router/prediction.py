"""An endpoint's expected time to first token now, predicted rather than remembered.

    predicted TTFT = unqueued TTFT + queue wait
    queue wait     = (requests beyond the free slots + 1) / service rate, 0 with a free slot
    service rate   = concurrency limit / mean slot hold time

The unqueued TTFT (mean, and a tail quantile) and the hold time are time-decayed statistics of
requests that found a free slot (stats.Service), so a burst that queued an endpoint does not
make it look slow once its queue is gone: the queue is read live (the router's in-flight count
and the provider's running and waiting counts from probes). An endpoint with less than one
unqueued sample for a half-life is ``stale``: its last numbers are kept but flagged, and the
policy sends it a request now and then so they recover.
"""

from __future__ import annotations

from typing import NamedTuple

from hybridinference.router.endpoints import Endpoint


class Prediction(NamedTuple):
    ttft_ms: float
    # The tail quantile of the unqueued TTFT plus the same queue wait.
    tail_ms: float
    queue_wait_ms: float
    # Requests here now (see Endpoint.load) and the endpoint's limit (None: unlimited).
    load: int
    capacity: int | None
    # No unqueued sample for a half-life (or ever): the numbers are a memory.
    stale: bool

    @property
    def has_free_slot(self) -> bool:
        return self.capacity is None or self.load < self.capacity


# (ttft_ms, tail_ms, queue_wait_ms, load, capacity, stale): Prediction's fields as a plain tuple,
# for the policy's per-candidate loop.
Raw = tuple[float, float, float, int, int | None, bool]


def predict(endpoint: Endpoint, now: float, tail_quantile: float = 0.9) -> Prediction:
    return Prediction(*predict_raw(endpoint, now, tail_quantile))


def predict_raw(endpoint: Endpoint, now: float, tail_quantile: float) -> Raw:
    """Runs for every candidate of every request (hybrid): plain attribute reads only."""
    stats = endpoint.stats
    service = stats.service
    mean = service.ttft_ms
    ttft = mean.value
    load = endpoint.in_flight + stats.others
    capacity = endpoint.max_concurrency or stats.learned_capacity
    if ttft is None:
        # Only whole replies (unary calls) so far: their time bounds the first token's.
        mean = service.hold_ms
        ttft = mean.value
        if ttft is None:
            # Unmeasured: optimistic, so it gets traffic (and samples) first.
            return (0.0, 0.0, 0.0, load, capacity, True)
    # The recent tail; when every sample is too old for it, the (decayed) mean stands in.
    tail = service.ttft_window.quantile(tail_quantile, now)
    if tail is None:
        tail = ttft
    if capacity is None or load < capacity:
        return (ttft, tail, 0.0, load, capacity, now - mean.at >= service.half_life_s)
    hold = service.hold_ms.value
    if hold is None:
        # Never seen a request finish: assume a slot frees after one first token.
        hold = ttft
    # Slots free at capacity/hold per millisecond; the request waits for the
    # (load - capacity + 1) ahead of it.
    wait = (load - capacity + 1) * hold / capacity
    return (ttft + wait, tail + wait, wait, load, capacity, now - mean.at >= service.half_life_s)
