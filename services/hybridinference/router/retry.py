"""Retry budget and backoff: how much extra load retries and hedges may add, and when.

The budget is a token bucket per model: every request deposits ``ratio`` tokens, every retry or
hedge spends one, and the balance is capped at ``burst``. In the long run retries add at most
``ratio`` of the traffic, so a failing fleet is not hammered by its own retries.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class RetryBudget:
    def __init__(self, ratio: float, burst: float) -> None:
        if not 0 <= ratio <= 1 or burst < 0:
            raise ValueError("retry budget needs 0 <= ratio <= 1 and burst >= 0")
        self.ratio = ratio
        self.burst = burst
        # Starts full, so the first failures after a start can be retried.
        self.balance = burst
        self.denied_total = 0

    def record_request(self) -> None:
        self.balance = min(self.burst, self.balance + self.ratio)

    def try_spend(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        self.denied_total += 1
        return False


class Backoff:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2^(retry-1))]."""

    def __init__(
        self, base_s: float, max_s: float, uniform: Callable[[float, float], float] | None = None
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._uniform = uniform or random.uniform

    def delay_s(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based).

        A server's RetryInfo is about that server, so it does not stretch the wait before trying
        another endpoint; the relay keeps that endpoint out of rotation for the hinted time.
        """
        ceiling = min(self.max_s, self.base_s * (2 ** max(0, retry - 1)))
        return self._uniform(0.0, ceiling) if ceiling > 0 else 0.0
