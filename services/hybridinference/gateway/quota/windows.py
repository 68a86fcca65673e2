"""Fixed UTC windows the counters use: the current minute, day and month, and their ends."""

from __future__ import annotations

import time
from calendar import timegm
from dataclasses import dataclass

MINUTE_TTL_S = 120
DAY_TTL_S = 2 * 86_400
MONTH_TTL_S = 32 * 86_400


@dataclass(frozen=True)
class Windows:
    minute: str
    day: str
    month: str
    # Seconds until each window ends (when a refusal from it can be retried).
    minute_left_s: float
    day_left_s: float
    month_left_s: float


def windows_at(now: float) -> Windows:
    moment = time.gmtime(now)
    day_start = timegm((moment.tm_year, moment.tm_mon, moment.tm_mday, 0, 0, 0))
    year, month = moment.tm_year, moment.tm_mon
    next_month = timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return Windows(
        minute=str(int(now // 60)),
        day=time.strftime("%Y%m%d", moment),
        month=time.strftime("%Y%m", moment),
        minute_left_s=60.0 - now % 60,
        day_left_s=day_start + 86_400 - now,
        month_left_s=next_month - now,
    )
