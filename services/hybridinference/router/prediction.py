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

from dataclasses import dataclass

from hybridinference.router.endpoints import Endpoint


@dataclass(frozen=True)
class Prediction:
    ttft_ms: float
    # The tail quantile of the unqueued TTFT plus the same queue wait.
    tail_ms: float
    queue_wait_ms: float
    # Requests here now (see Endpoint.load) and the endpoint's limit (None: unlimited).
    load: int
    capacity: int | None
    # No sample yet, or too few recent ones: the numbers are a memory, not a measurement.
    stale: bool

    @property
    def has_free_slot(self) -> bool:
        return self.capacity is None or self.load < self.capacity


def predict(endpoint: Endpoint, now: float, tail_quantile: float = 0.9) -> Prediction:
    service = endpoint.stats.service
    ttft = service.ttft_ms.value
    load = endpoint.load()
    capacity = endpoint.capacity
    if ttft is None:
        # Unmeasured: optimistic, so it gets traffic (and samples) first.
        return Prediction(0.0, 0.0, 0.0, load, capacity, True)
    # The recent tail; when every sample is too old for it, the (decayed) mean stands in.
    tail = service.ttft_window.quantile(tail_quantile, now)
    if tail is None:
        tail = ttft
    wait = 0.0
    if capacity is not None and load >= capacity:
        hold = service.hold_ms.value
        if hold is None:
            # Never seen a request finish: assume a slot frees after one first token.
            hold = ttft
        ahead = load - capacity + 1
        # Slots free at capacity/hold per millisecond; the request waits for `ahead` of them.
        wait = ahead * hold / capacity
    return Prediction(ttft + wait, tail + wait, wait, load, capacity, service.stale(now))
