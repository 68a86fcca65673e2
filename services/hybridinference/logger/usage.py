"""Usage accounting: the hourly rollup of stored rows and the per-day buckets read from it.

Only rows a batch newly inserted are rolled up, in the same transaction, so a replayed record
(already stored) is never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hybridinference.logger.rows import Row

# Without a start, usage covers this many days before the end.
DEFAULT_DAYS = 30


@dataclass
class UsageTotals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0

    def add_row(self, row: Row) -> None:
        self.requests += 1
        self.errors += row.status != "OK"
        self.prompt_tokens += row.prompt_tokens or 0
        self.completion_tokens += row.completion_tokens or 0
        self.cached_tokens += row.cached_tokens or 0
        self.total_tokens += row.total_tokens or 0
        self.cost_usd += row.cost_usd


# (start of the UTC hour or day, api_key_id, requested model)
UsageKey = tuple[datetime, str, str]


@dataclass(frozen=True)
class UsageBucket:
    day: datetime
    api_key_id: str
    model: str
    totals: UsageTotals


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def hourly_rollup(rows: Iterable[Row]) -> list[tuple[UsageKey, UsageTotals]]:
    """Totals per (hour, key, model), sorted so concurrent writers lock rollup rows in order."""
    totals: dict[UsageKey, UsageTotals] = {}
    for row in rows:
        key = (hour_of(row.started_at), row.api_key_id, row.requested_model)
        totals.setdefault(key, UsageTotals()).add_row(row)
    return sorted(totals.items(), key=lambda item: item[0])


@dataclass(frozen=True)
class UsageQuery:
    """Whole UTC days [start, end) and optional exact-match filters."""

    start: datetime
    end: datetime
    api_key_id: str = ""
    model: str = ""

    @classmethod
    def covering(
        cls,
        start: datetime | None,
        end: datetime | None,
        api_key_id: str = "",
        model: str = "",
        now: datetime | None = None,
    ) -> UsageQuery:
        """Widens the times to whole days: start to its midnight, end up to the next one."""
        end_moment = end or now or datetime.now(UTC)
        end_day = day_of(end_moment)
        if end_day != end_moment:
            end_day += timedelta(days=1)
        start_day = day_of(start) if start else end_day - timedelta(days=DEFAULT_DAYS)
        if start_day >= end_day:
            raise ValueError("start_time must be before end_time")
        return cls(start_day, end_day, api_key_id, model)


def usage_bucket(values: tuple[object, ...]) -> UsageBucket:
    """A bucket from a query row: day, key, model, requests, errors, 4 token sums, cost."""
    day, key, model, *counts, cost = values
    assert isinstance(day, datetime)
    requests, errors, prompt, completion, cached, total = (int(str(c)) for c in counts)
    totals = UsageTotals(requests, errors, prompt, completion, cached, total, float(str(cost)))
    return UsageBucket(day, str(key), str(model), totals)
