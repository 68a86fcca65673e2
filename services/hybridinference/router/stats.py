"""Per-endpoint observations: latency EWMAs, a window of recent TTFTs for quantiles, probe load,
and time-decayed statistics of unqueued service (what the hybrid policy predicts from).

Everything here is cheap per request: a sample updates an EWMA, overwrites one slot of a ring and
moves one value in a sorted copy (bisect), so quantiles are O(1) reads. The p95 is kept as a plain
attribute because the cost policy reads it for every candidate of every request.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field

# Recent first-token times kept per endpoint. Small on purpose: a p95 over the last 64 requests
# reacts within seconds when an endpoint slows down or recovers.
WINDOW = 64


class Ewma:
    """Exponentially weighted moving average; None until the first sample."""

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"EWMA alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.value: float | None = None

    def add(self, sample: float) -> None:
        if self.value is None:
            self.value = sample
        else:
            self.value += self.alpha * (sample - self.value)


class LatencyWindow:
    """The last WINDOW samples, in arrival order (a ring) and sorted (for quantiles)."""

    __slots__ = ("_next", "_samples", "_sorted")

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._next = 0
        self._sorted: list[float] = []

    def add(self, sample: float) -> None:
        if len(self._samples) < WINDOW:
            self._samples.append(sample)
        else:
            oldest = self._samples[self._next]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
            self._samples[self._next] = sample
            self._next = (self._next + 1) % WINDOW
        bisect.insort(self._sorted, sample)

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile of the window (q in [0, 1]); None when empty."""
        ordered = self._sorted
        if not ordered:
            return None
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))
        return ordered[index]


class DecayingMean:
    """A mean whose samples lose weight with time, not only with newer samples: a sample
    ``half_life_s`` old weighs half. ``weight(now)`` is how many fresh samples' worth of evidence
    is left, so a reader can tell a current estimate from a remembered one."""

    __slots__ = ("_weight", "at", "decay_per_s", "half_life_s", "max_weight", "value")

    def __init__(self, half_life_s: float, max_weight: float = 8.0) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half-life must be positive, got {half_life_s}")
        self.half_life_s = half_life_s
        self.decay_per_s = math.log(2) / half_life_s
        # Caps the evidence, so a new sample always moves the mean by at least 1/(cap+1): a
        # long-quiet endpoint's first new sample counts for about half.
        self.max_weight = max_weight
        self.value: float | None = None
        self._weight = 0.0
        self.at = 0.0

    def weight(self, now: float) -> float:
        return self._weight * math.exp(-self.decay_per_s * max(0.0, now - self.at))

    def add(self, sample: float, now: float) -> None:
        weight = self.weight(now)
        if self.value is None:
            self.value = sample
        else:
            self.value = (self.value * weight + sample) / (weight + 1.0)
        self._weight = min(self.max_weight, weight + 1.0)
        self.at = max(self.at, now)

    def age(self, now: float) -> float:
        """Seconds since the last sample (infinite before the first)."""
        return now - self.at if self.value is not None else math.inf


class TimedWindow:
    """Recent samples for quantiles: at most WINDOW of them, none older than ``max_age_s``,
    so a tail that was measured long ago stops counting instead of lasting until new traffic
    pushes it out."""

    __slots__ = ("_cache", "_entries", "_sorted", "max_age_s")

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._entries: collections.deque[tuple[float, float]] = collections.deque()
        self._sorted: list[float] = []
        # (q, value, valid until): policies read the same quantile for every request, and it
        # only changes when a sample arrives or the oldest one ages out.
        self._cache: tuple[float, float | None, float] = (-1.0, None, 0.0)

    def add(self, sample: float, now: float) -> None:
        if len(self._entries) >= WINDOW:
            self._drop_oldest()
        self._entries.append((now, sample))
        bisect.insort(self._sorted, sample)
        self._cache = (-1.0, None, 0.0)

    def _drop_oldest(self) -> None:
        _, oldest = self._entries.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def quantile(self, q: float, now: float) -> float | None:
        """Nearest-rank quantile of the samples younger than max_age_s; None when none is."""
        cached_q, value, valid_until = self._cache
        if cached_q == q and now < valid_until:
            return value
        entries = self._entries
        cutoff = now - self.max_age_s
        while entries and entries[0][0] < cutoff:
            self._drop_oldest()
        ordered = self._sorted
        if not ordered:
            self._cache = (q, None, math.inf)
            return None
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))
        value = ordered[index]
        self._cache = (q, value, entries[0][0] + self.max_age_s)
        return value

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Service:
    """Time-decayed view of an endpoint's unqueued service: what a request that finds a free
    slot sees. Queueing is predicted from the live queue, so a burst does not inflate these."""

    half_life_s: float = 10.0
    # Time to first token of requests that started with a free slot, mean and recent tail (the
    # tail from samples at most two half-lives old).
    ttft_ms: DecayingMean = field(init=False)
    ttft_window: TimedWindow = field(init=False)
    # How long such a request held its slot (first token plus generation), for the service rate.
    hold_ms: DecayingMean = field(init=False)

    def __post_init__(self) -> None:
        self.ttft_ms = DecayingMean(self.half_life_s)
        self.ttft_window = TimedWindow(2 * self.half_life_s)
        self.hold_ms = DecayingMean(self.half_life_s)

    def stale(self, now: float) -> bool:
        """No unqueued TTFT for a half-life (or ever): the numbers are a memory."""
        return self.ttft_ms.age(now) >= self.half_life_s


@dataclass
class EndpointStats:
    """What the router has observed of one endpoint. Times are in milliseconds."""

    alpha: float = 0.2
    ttft_ewma: Ewma = field(init=False)
    tpot_ewma: Ewma = field(init=False)
    ttft_window: LatencyWindow = field(default_factory=LatencyWindow)
    # From the provider's last status probe.
    waiting: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0
    # p95 of the window, refreshed on every sample; None before the first.
    ttft_p95: float | None = None
    service: Service = field(default_factory=Service)
    # Requests the provider had at the last probe beyond the router's own in-flight ones.
    others: int = 0
    # Concurrency limit learned from probes: the running count while the provider queues.
    learned_capacity: int | None = None

    def __post_init__(self) -> None:
        self.ttft_ewma = Ewma(self.alpha)
        self.tpot_ewma = Ewma(self.alpha)

    def record_ttft(self, ttft_ms: float) -> None:
        self.ttft_ewma.add(ttft_ms)
        self.ttft_window.add(ttft_ms)
        self.ttft_p95 = self.ttft_window.quantile(0.95)

    def record_tpot(self, tpot_ms: float) -> None:
        self.tpot_ewma.add(tpot_ms)

    def ttft_p(self, q: float) -> float | None:
        return self.ttft_window.quantile(q)

    def record_unqueued(self, ttft_ms: float | None, hold_ms: float | None, now: float) -> None:
        """A request that started with a free slot: its TTFT, and how long it held the slot."""
        service = self.service
        if ttft_ms is not None:
            service.ttft_ms.add(ttft_ms, now)
            service.ttft_window.add(ttft_ms, now)
        if hold_ms is not None:
            service.hold_ms.add(hold_ms, now)

    def record_probe(
        self, waiting: int, running: int, kv_cache_usage: float, own_in_flight: int = 0
    ) -> None:
        """A status probe's view; ``own_in_flight`` is the router's own count at the time, so
        what is left over is load from elsewhere (other routers, direct clients)."""
        self.waiting = waiting
        self.running = running
        self.kv_cache_usage = kv_cache_usage
        self.others = max(0, waiting + running - own_in_flight)
        if waiting > 0 and running > 0:
            # A provider queues only when its slots are full: running is its limit.
            self.learned_capacity = running
