"""The windows the counters use: a sliding minute (a weighted pair of fixed minutes) for rates,
fixed UTC days and months for budgets, and when a refusal from each can be retried."""

from __future__ import annotations

import time
from calendar import timegm
from dataclasses import dataclass

MINUTE_S = 60.0
# A minute bucket is read while it is the current or the previous minute, then dropped.
MINUTE_TTL_S = 180
DAY_TTL_S = 2 * 86_400
MONTH_TTL_S = 32 * 86_400


@dataclass(frozen=True)
class Windows:
    # Index of the current fixed minute (Unix minutes); the previous one is minute - 1.
    minute: int
    day: str
    month: str
    # The previous minute's share of the sliding minute ending now: 1 at the minute's start,
    # falling linearly to 0 at its end.
    previous_weight: float
    # Seconds until the day and the month end (when a budget refusal can be retried).
    day_left_s: float
    month_left_s: float


def windows_at(now: float) -> Windows:
    moment = time.gmtime(now)
    day_start = timegm((moment.tm_year, moment.tm_mon, moment.tm_mday, 0, 0, 0))
    year, month = moment.tm_year, moment.tm_mon
    next_month = timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return Windows(
        minute=int(now // MINUTE_S),
        day=time.strftime("%Y%m%d", moment),
        month=time.strftime("%Y%m", moment),
        previous_weight=1.0 - (now % MINUTE_S) / MINUTE_S,
        day_left_s=day_start + 86_400 - now,
        month_left_s=next_month - now,
    )


def sliding_used(previous: float, current: float, now: float) -> float:
    """The usage of the last 60 s, estimated from two fixed minutes (the previous one weighted
    by how much of it still lies in the window) — no burst at a minute boundary doubles it."""
    return previous * windows_at(now).previous_weight + current


def sliding_retry_after(previous: float, current: float, target: float, now: float) -> float:
    """Seconds until the sliding usage falls to ``target`` (nothing new counted meanwhile)."""
    elapsed = now % MINUTE_S
    left = MINUTE_S - elapsed
    if current <= target and previous > 0:
        # Within this minute: previous * (1 - x / 60) + current = target.
        at = MINUTE_S * (1.0 - (target - current) / previous)
        return max(at - elapsed, 0.0)
    if target < 0:
        return left + MINUTE_S
    # In the next minute this one becomes the previous: current * (1 - s / 60) = target.
    into_next = MINUTE_S * (1.0 - target / current) if current > 0 else 0.0
    return left + max(into_next, 0.0)
