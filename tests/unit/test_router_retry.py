"""Retry budget, jittered backoff and the per-endpoint statistics."""

from __future__ import annotations

import pytest

from hybridinference.router.retry import Backoff, RetryBudget
from hybridinference.router.stats import WINDOW, EndpointStats, Ewma, LatencyWindow


def test_budget_allows_burst_then_ratio_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, burst=2)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    spent = 0
    for _ in range(100):
        budget.record_request()
        spent += budget.try_spend()
    # 100 requests at 20% buy 20 retries, no more.
    assert spent == 20
    assert budget.denied_total == 1 + 80


def test_budget_balance_is_capped_at_burst() -> None:
    budget = RetryBudget(ratio=1.0, burst=3)
    for _ in range(50):
        budget.record_request()
    assert budget.balance == 3
    with pytest.raises(ValueError):
        RetryBudget(ratio=1.5, burst=1)


def test_backoff_is_full_jitter_capped_and_deterministic() -> None:
    calls: list[tuple[float, float]] = []

    def top(low: float, high: float) -> float:
        calls.append((low, high))
        return high

    backoff = Backoff(base_s=0.01, max_s=0.05, uniform=top)
    assert [backoff.delay_s(n) for n in (1, 2, 3, 4)] == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert calls[0] == (0.0, 0.01)
    assert Backoff(0.0, 0.0, uniform=top).delay_s(3) == 0.0


def test_ewma_and_window_quantiles() -> None:
    ewma = Ewma(0.5)
    assert ewma.value is None
    ewma.add(10)
    ewma.add(20)
    assert ewma.value == 15
    window = LatencyWindow()
    assert window.quantile(0.9) is None
    for sample in range(1, 101):
        window.add(float(sample))
    # Only the newest WINDOW samples count: 37..100.
    assert len(window) == WINDOW
    assert window.quantile(0.0) == 101 - WINDOW
    assert window.quantile(0.5) == 68
    assert window.quantile(0.95) == 97
    assert window.quantile(1.0) == 100
    with pytest.raises(ValueError):
        Ewma(0)


def test_endpoint_stats_feed_ewma_and_window() -> None:
    stats = EndpointStats(alpha=1.0)
    stats.record_ttft(30)
    stats.record_ttft(50)
    stats.record_tpot(4)
    assert stats.ttft_ewma.value == 50 and stats.tpot_ewma.value == 4
    assert stats.ttft_p(0.5) == 30 and stats.ttft_p(0.9) == 50
