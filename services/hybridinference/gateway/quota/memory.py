"""Counters in this gateway's memory: exact for one replica, lost on restart."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridinference.gateway.quota import limits as names
from hybridinference.gateway.quota.counters import Counters, Ticket
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal
from hybridinference.gateway.quota.windows import sliding_retry_after, sliding_used, windows_at

# The concurrency slot gets a fixed short wait: it frees as soon as any request ends.
SLOT_RETRY_S = 1.0


@dataclass
class _Minute:
    requests: int = 0
    tokens: int = 0


@dataclass
class _KeyUsage:
    # Fixed minutes by index (the current and the previous are kept), spend by day and month.
    minutes: dict[int, _Minute] = field(default_factory=dict)
    days: dict[str, float] = field(default_factory=dict)
    months: dict[str, float] = field(default_factory=dict)
    # ticket → slot expiry (the same clock as ``now``).
    in_flight: dict[str, float] = field(default_factory=dict)

    def roll(self, now: float) -> None:
        """Drops windows that can no longer be read or refunded."""
        w = windows_at(now)
        for minute in [m for m in self.minutes if m < w.minute - 1]:
            del self.minutes[minute]
        for day in [d for d in self.days if d != w.day]:
            del self.days[day]
        for month in [m for m in self.months if m != w.month]:
            del self.months[month]
        for stale in [t for t, until in self.in_flight.items() if until <= now]:
            del self.in_flight[stale]


class MemoryCounters(Counters):
    def __init__(self) -> None:
        self._usage: dict[str, _KeyUsage] = {}

    def refusal(self, usage: _KeyUsage, limits: QuotaLimits, now: float) -> Refusal | None:
        w = windows_at(now)
        current = usage.minutes.get(w.minute, _Minute())
        previous = usage.minutes.get(w.minute - 1, _Minute())
        # Everything checked before anything is counted, so a refused request costs nothing.
        if limits.tokens_per_minute is not None:
            used = sliding_used(previous.tokens, current.tokens, now)
            if used >= limits.tokens_per_minute:
                retry = sliding_retry_after(
                    previous.tokens, current.tokens, limits.tokens_per_minute - 1, now
                )
                return Refusal(names.TOKENS_PER_MINUTE, limits.tokens_per_minute, used, retry)
        budgets = (
            (names.DAILY_BUDGET, limits.daily_budget_usd, usage.days, w.day, w.day_left_s),
            (
                names.MONTHLY_BUDGET,
                limits.monthly_budget_usd,
                usage.months,
                w.month,
                w.month_left_s,
            ),
        )
        for name, limit, spend, period, left in budgets:
            if limit is not None and spend.get(period, 0.0) >= limit:
                return Refusal(name, limit, spend[period], left)
        if limits.requests_per_minute is not None:
            used = sliding_used(previous.requests, current.requests, now)
            if used + 1 > limits.requests_per_minute:
                retry = sliding_retry_after(
                    previous.requests, current.requests, limits.requests_per_minute - 1, now
                )
                return Refusal(names.REQUESTS_PER_MINUTE, limits.requests_per_minute, used, retry)
        if limits.max_concurrent is not None and len(usage.in_flight) >= limits.max_concurrent:
            return Refusal(
                names.MAX_CONCURRENT, limits.max_concurrent, len(usage.in_flight), SLOT_RETRY_S
            )
        return None

    async def admit(self, ticket: Ticket, hold_s: float) -> Refusal | None:
        now = ticket.admitted_at
        usage = self._usage.setdefault(ticket.key_id, _KeyUsage())
        usage.roll(now)
        refusal = self.refusal(usage, ticket.limits, now)
        if refusal is not None:
            return refusal
        w = windows_at(now)
        minute = usage.minutes.setdefault(w.minute, _Minute())
        minute.requests += 1
        minute.tokens += ticket.reserved.tokens
        usage.days[w.day] = usage.days.get(w.day, 0.0) + ticket.reserved.cost_usd
        usage.months[w.month] = usage.months.get(w.month, 0.0) + ticket.reserved.cost_usd
        usage.in_flight[ticket.ticket] = now + hold_s
        return None

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        self._release(
            ticket, 0, tokens - ticket.reserved.tokens, cost_usd - ticket.reserved.cost_usd
        )

    async def void(self, ticket: Ticket, hold_s: float) -> None:
        # In memory an admission never outlives its answer; this only undoes one.
        self._release(ticket, -1, -ticket.reserved.tokens, -ticket.reserved.cost_usd)

    def usage(self, key_id: str, now: float) -> tuple[int, float]:
        """Tokens charged in now's fixed minute and the spend of now's day (reservations
        included), for tests and diagnostics."""
        usage = self._usage.get(key_id, _KeyUsage())
        w = windows_at(now)
        return usage.minutes.get(w.minute, _Minute()).tokens, usage.days.get(w.day, 0.0)

    def _release(self, ticket: Ticket, requests: int, tokens: int, cost_usd: float) -> None:
        usage = self._usage.get(ticket.key_id)
        if usage is None or usage.in_flight.pop(ticket.ticket, None) is None:
            return  # Settled, voided or expired already.
        w = windows_at(ticket.admitted_at)
        # The correction goes to the windows the reservation went to, if they still count.
        minute = usage.minutes.get(w.minute)
        if minute is not None:
            minute.requests += requests
            minute.tokens += tokens
        for spend, period in ((usage.days, w.day), (usage.months, w.month)):
            if period in spend:
                spend[period] += cost_usd
