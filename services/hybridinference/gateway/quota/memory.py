"""Counters in this gateway's memory: exact for one replica, lost on restart."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridinference.gateway.quota import limits as names
from hybridinference.gateway.quota.counters import Counters
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal
from hybridinference.gateway.quota.windows import windows_at

# The concurrency slot gets a fixed short wait: it frees as soon as any request ends.
SLOT_RETRY_S = 1.0


@dataclass
class _KeyUsage:
    minute: str = ""
    requests: int = 0
    tokens: int = 0
    day: str = ""
    day_spend: float = 0.0
    month: str = ""
    month_spend: float = 0.0
    # ticket → expiry (monotonic-free: the same clock as ``now``).
    in_flight: dict[str, float] = field(default_factory=dict)


class MemoryCounters(Counters):
    def __init__(self) -> None:
        self._usage: dict[str, _KeyUsage] = {}

    def _current(self, key_id: str, now: float) -> tuple[_KeyUsage, float, float, float]:
        usage = self._usage.setdefault(key_id, _KeyUsage())
        w = windows_at(now)
        if usage.minute != w.minute:
            usage.minute, usage.requests, usage.tokens = w.minute, 0, 0
        if usage.day != w.day:
            usage.day, usage.day_spend = w.day, 0.0
        if usage.month != w.month:
            usage.month, usage.month_spend = w.month, 0.0
        return usage, w.minute_left_s, w.day_left_s, w.month_left_s

    async def admit(
        self, key_id: str, ticket: str, limits: QuotaLimits, now: float, hold_s: float
    ) -> Refusal | None:
        usage, minute_left, day_left, month_left = self._current(key_id, now)
        # Everything checked before anything is counted, so a refused request costs nothing.
        checks = (
            (names.TOKENS_PER_MINUTE, limits.tokens_per_minute, usage.tokens, minute_left),
            (names.DAILY_BUDGET, limits.daily_budget_usd, usage.day_spend, day_left),
            (names.MONTHLY_BUDGET, limits.monthly_budget_usd, usage.month_spend, month_left),
            (names.REQUESTS_PER_MINUTE, limits.requests_per_minute, usage.requests, minute_left),
        )
        for name, limit, used, retry in checks:
            if limit is not None and used >= limit:
                return Refusal(name, limit, used, retry)
        if limits.max_concurrent is not None:
            expired = [t for t, until in usage.in_flight.items() if until <= now]
            for stale in expired:
                del usage.in_flight[stale]
            if len(usage.in_flight) >= limits.max_concurrent:
                return Refusal(
                    names.MAX_CONCURRENT, limits.max_concurrent, len(usage.in_flight), SLOT_RETRY_S
                )
            usage.in_flight[ticket] = now + hold_s
        usage.requests += 1
        return None

    async def settle(
        self,
        key_id: str,
        ticket: str,
        limits: QuotaLimits,
        tokens: int,
        cost_usd: float,
        now: float,
    ) -> None:
        usage, _, _, _ = self._current(key_id, now)
        usage.in_flight.pop(ticket, None)
        usage.tokens += tokens
        usage.day_spend += cost_usd
        usage.month_spend += cost_usd
