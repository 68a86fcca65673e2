"""Traffic aggregation and the admin request checks behind the console."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hybridinference.common.errors import ServiceError
from hybridinference.gateway import admin_requests
from hybridinference.gateway.v1 import admin_pb2
from hybridinference.logger.traffic import (
    TrafficQuery,
    TrafficQueryError,
    TrafficSample,
    aggregate,
    percentile,
)

START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def sample(offset_s: float, model: str = "m", ok: bool = True, ttft: float = 10.0) -> TrafficSample:
    return TrafficSample(START + timedelta(seconds=offset_s), model, ok, ttft, ttft * 2, 3, 5, 0.5)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) == 0.0


def test_every_bucket_is_present_and_samples_outside_are_ignored() -> None:
    query = TrafficQuery.of(START, START + timedelta(seconds=180), 60)
    samples = [
        sample(1),
        sample(2, ok=False, ttft=0.0),
        sample(130, model="other"),
        sample(-1),  # before the window
        sample(180),  # the end is exclusive
    ]
    series = aggregate(query, samples)
    assert list(series) == ["m", "other"]
    first, second, third = series["m"].buckets
    assert (first.requests, first.errors, first.total_tokens) == (2, 1, 10)
    # A failure before the first token has no TTFT: it does not pull the percentiles to 0.
    assert first.ttft_p50_ms == first.ttft_p95_ms == 10.0
    assert first.latency_p50_ms == 0.0 and first.latency_p95_ms == 20.0
    assert second.requests == 0 and second.start == START + timedelta(seconds=60)
    assert series["other"].buckets[2].requests == 1 and third.requests == 0
    total = series["m"].total
    assert (total.start, total.requests, total.errors, total.cost_usd) == (START, 2, 1, 1.0)


@pytest.mark.parametrize(
    ("start", "end", "bucket", "field"),
    [
        (None, START, 60, "start_time"),
        (START, None, 60, "end_time"),
        (START, START, 60, "end_time"),
        (START, START + timedelta(hours=1), 0, "bucket_seconds"),
        (START, START + timedelta(days=2), 1, "bucket_seconds"),
    ],
)
def test_bad_windows_name_the_field(
    start: datetime | None, end: datetime | None, bucket: int, field: str
) -> None:
    with pytest.raises(TrafficQueryError) as raised:
        TrafficQuery.of(start, end, bucket)
    assert raised.value.field_name == field


def test_admin_traffic_window_defaults_and_limits() -> None:
    now = START
    query = admin_requests.traffic_request(admin_pb2.GetTrafficRequest(), now)
    assert query.bucket_seconds == 60
    assert query.end_time.ToDatetime(tzinfo=UTC) == now
    assert query.start_time.ToDatetime(tzinfo=UTC) == now - timedelta(hours=1)
    with pytest.raises(ServiceError) as raised:
        admin_requests.traffic_request(
            admin_pb2.GetTrafficRequest(window_seconds=86_400, bucket_seconds=10), now
        )
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in raised.value.violations] == ["bucket_seconds"]


def test_key_limits_are_checked_field_by_field() -> None:
    limits = admin_pb2.KeyLimits(requests_per_minute=5, daily_budget_usd=1.5)
    parsed = admin_requests.key_limits(limits)
    assert parsed.model_dump(exclude_none=True) == {
        "requests_per_minute": 5,
        "daily_budget_usd": 1.5,
    }
    with pytest.raises(ServiceError) as raised:
        admin_requests.key_limits(admin_pb2.KeyLimits(tokens_per_minute=0, max_concurrent=-1))
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(v.field for v in raised.value.violations) == [
        "limits.max_concurrent",
        "limits.tokens_per_minute",
    ]
    with pytest.raises(ServiceError):
        admin_requests.key_name("   ")
    assert admin_requests.key_models(["a", "a", "b"]) == ("a", "b")


def test_the_total_has_percentiles_of_the_whole_window() -> None:
    # Minute 0: ten fast requests; minute 1: one slow one. The window's percentiles rank all
    # eleven together, which no combination of the per-minute ones gives.
    query = TrafficQuery.of(START, START + timedelta(seconds=120), 60)
    samples = [sample(i, ttft=float(i + 1)) for i in range(10)] + [sample(70, ttft=500.0)]
    traffic = aggregate(query, samples)["m"]
    assert [b.ttft_p95_ms for b in traffic.buckets] == [10.0, 500.0]
    assert traffic.total.requests == 11
    assert traffic.total.ttft_p50_ms == 6.0 and traffic.total.ttft_p95_ms == 500.0
