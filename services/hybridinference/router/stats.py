"""Per-endpoint observations: latency EWMAs, a window of recent TTFTs for quantiles, probe load.

Everything here is cheap per request: a sample updates an EWMA, overwrites one slot of a ring and
moves one value in a sorted copy (bisect), so quantiles are O(1) reads. The p95 is kept as a plain
attribute because the cost policy reads it for every candidate of every request.
"""

from __future__ import annotations

import bisect
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
