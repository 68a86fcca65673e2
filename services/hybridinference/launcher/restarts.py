"""When a crashed service is restarted, and when the launcher stops trying (pure, unit-testable).

A crash is restarted after a delay that doubles with every crash still inside the window (so a
service that crashes once in a while comes straight back, and one that crash-loops does not spin
the CPU); more than ``max_restarts`` crashes inside ``window_s`` means the fault will not go away
by itself, and the launcher gives up, naming the service.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0:
            raise ValueError("max_restarts must be >= 0 and window_s > 0")


class CrashHistory:
    """One service's recent crashes."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._crashes: deque[float] = deque()

    @property
    def recent(self) -> int:
        """Crashes inside the window, as of the last ``crashed``."""
        return len(self._crashes)

    def crashed(self) -> float | None:
        """Records a crash now; the delay before restarting, or None to give up."""
        now = self._clock()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] <= now - self._policy.window_s:
            self._crashes.popleft()
        n = len(self._crashes)
        if n > self._policy.max_restarts:
            return None
        return float(min(self._policy.first_delay_s * 2 ** (n - 1), self._policy.max_delay_s))
