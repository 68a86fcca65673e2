"""Traffic per requested model and time bucket, aggregated from request-log samples.

The stores read one narrow sample per record of the window (TrafficSample); the aggregation is
here, once, so both dialects give the same numbers. Percentiles are exact (nearest rank) over the
bucket's samples: SQLite has no percentile function, and a bucket of one model rarely holds more
than a few thousand requests. A store reads at most MAX_SAMPLES records per call, newest first,
and says so when the window held more.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from hybridinference.logger.rows import to_micros

# Records one GetTraffic call reads at most (about 100 req/s for an hour).
MAX_SAMPLES = 400_000
MAX_BUCKETS = 1440
MAX_BUCKET_SECONDS = 86_400


class TrafficQueryError(ValueError):
    """The window or bucket width is out of range; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


class TrafficSample(NamedTuple):
    """What the aggregation needs of one record."""

    started_at: datetime
    model: str
    ok: bool
    ttft_ms: float
    latency_ms: float
    completion_tokens: int
    total_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class TrafficQuery:
    start: datetime
    end: datetime
    bucket_seconds: int

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, bucket_seconds: int) -> TrafficQuery:
        if start is None:
            raise TrafficQueryError("start_time", "start_time is required")
        if end is None:
            raise TrafficQueryError("end_time", "end_time is required")
        if end <= start:
            raise TrafficQueryError("end_time", "end_time must be after start_time")
        if not 1 <= bucket_seconds <= MAX_BUCKET_SECONDS:
            raise TrafficQueryError(
                "bucket_seconds", f"bucket_seconds must be between 1 and {MAX_BUCKET_SECONDS}"
            )
        if cls(start, end, bucket_seconds).bucket_count > MAX_BUCKETS:
            raise TrafficQueryError(
                "bucket_seconds", f"the window holds more than {MAX_BUCKETS} buckets"
            )
        return cls(start, end, bucket_seconds)

    @property
    def bucket_count(self) -> int:
        span_us = to_micros(self.end) - to_micros(self.start)
        return math.ceil(span_us / (self.bucket_seconds * 1_000_000))

    def bucket_start(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index * self.bucket_seconds)

    def index_of(self, moment: datetime) -> int:
        return (to_micros(moment) - to_micros(self.start)) // (self.bucket_seconds * 1_000_000)


@dataclass
class TrafficBucket:
    start: datetime
    requests: int = 0
    errors: int = 0
    ttft_p50_ms: float = 0.0
    ttft_p95_ms: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class _Acc:
    ttfts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    completion: int = 0
    total: int = 0
    cost: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


@dataclass
class SeriesTraffic:
    """One model's buckets, oldest first, and the whole window as one bucket."""

    buckets: list[TrafficBucket]
    total: TrafficBucket


def _bucket(start: datetime, acc: _Acc | None) -> TrafficBucket:
    bucket = TrafficBucket(start)
    if acc is None:
        return bucket
    ttfts, latencies = sorted(acc.ttfts), sorted(acc.latencies)
    bucket.requests, bucket.errors = acc.requests, acc.errors
    bucket.ttft_p50_ms, bucket.ttft_p95_ms = percentile(ttfts, 0.5), percentile(ttfts, 0.95)
    bucket.latency_p50_ms = percentile(latencies, 0.5)
    bucket.latency_p95_ms = percentile(latencies, 0.95)
    bucket.completion_tokens, bucket.total_tokens = acc.completion, acc.total
    bucket.cost_usd = acc.cost
    return bucket


def _add(acc: _Acc, sample: TrafficSample) -> None:
    acc.requests += 1
    acc.errors += 0 if sample.ok else 1
    # A request that failed before its first token has no TTFT; it must not pull the
    # percentiles towards 0.
    if sample.ttft_ms > 0:
        acc.ttfts.append(sample.ttft_ms)
    acc.latencies.append(sample.latency_ms)
    acc.completion += sample.completion_tokens
    acc.total += sample.total_tokens
    acc.cost += sample.cost_usd


def aggregate(query: TrafficQuery, samples: Iterable[TrafficSample]) -> dict[str, SeriesTraffic]:
    """Per model that had a request in the window: every bucket of it, and its total."""
    accs: dict[str, dict[int, _Acc]] = defaultdict(lambda: defaultdict(_Acc))
    totals: dict[str, _Acc] = defaultdict(_Acc)
    count = query.bucket_count
    for sample in samples:
        index = query.index_of(sample.started_at)
        if not 0 <= index < count:
            continue
        _add(accs[sample.model][index], sample)
        _add(totals[sample.model], sample)
    return {
        model: SeriesTraffic(
            [_bucket(query.bucket_start(i), accs[model].get(i)) for i in range(count)],
            _bucket(query.start, totals[model]),
        )
        for model in sorted(accs)
    }
