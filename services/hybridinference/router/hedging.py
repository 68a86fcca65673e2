"""Hedging: a backup attempt on another endpoint when the first is slow to its first token.

The backup starts when the primary has produced nothing by the primary endpoint's own p90 TTFT
(and never later than the model's TTFT SLO); whichever attempt produces a first result first
wins and the other is cancelled. Backups count as attempts and spend the model's retry budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from hybridinference.router.attempt import Attempt, EarlyFailure
from hybridinference.router.endpoints import Endpoint, Model
from hybridinference.router.prediction import predict_raw
from hybridinference.router.request_state import RequestState

log = logging.getLogger(__name__)

T = TypeVar("T")

# Starts an attempt of the request's kind (stream or unary) as a backup: (endpoint, deadline).
StartBackup = Callable[[Endpoint, float | None], Attempt[T]]


def hedge_delay_s(model: Model, endpoint: Endpoint, now: float) -> float:
    """When to start a backup: the endpoint's own p90 TTFT once it has hedge_min_samples, but no
    later than the model's TTFT SLO: past it the request has missed, and a backup is its best
    chance. Before the endpoint has the samples, at the SLO (a burst that reaches an endpoint
    before its first answers would otherwise keep every tail it draws)."""
    options = model.options
    stats = endpoint.stats
    slo = options.ttft_slo_ms
    if len(stats.ttft_window) < options.hedge_min_samples:
        return slo / 1000
    p90 = stats.ttft_p(0.9) or 0.0
    if endpoint.capacity is not None and stats.service.ttft_ms.value is not None:
        # An endpoint with a queue: its p90 *given the queue it has now* (unqueued p90 plus the
        # predicted wait), not the window's, which mixes quiet and busy times. A request that
        # is waiting its turn as predicted is not late, and hedging it would spend the retry
        # budget that the real tails need.
        p90 = predict_raw(endpoint, now, 0.9)[1]
    return min(max(p90, options.hedge_min_delay_ms), slo) / 1000


async def race(
    state: RequestState, primary: Attempt[T], start: StartBackup[T]
) -> tuple[Attempt[T], T]:
    """Waits for the primary's first result; past the hedge delay, starts a backup on the next
    candidate and returns whichever produces a first result first (the other is cancelled).
    Raises EarlyFailure when every started attempt failed before a first result."""
    delay_s = hedge_delay_s(state.model, primary.endpoint, state.clock())
    racing: dict[asyncio.Task[T], Attempt[T]] = {asyncio.ensure_future(primary.first()): primary}
    winner: Attempt[T] | None = None
    try:
        last_failure: EarlyFailure | None = None
        hedged = False
        while racing:
            done, _ = await asyncio.wait(
                racing, timeout=None if hedged else delay_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                hedged = True
                backup = _backup(state, primary.endpoint, start)
                if backup is not None:
                    racing[asyncio.ensure_future(backup.first())] = backup
                continue
            for task in done:
                attempt = racing.pop(task)
                failure = task.exception()
                if failure is None:
                    winner = attempt
                    return attempt, task.result()
                if not isinstance(failure, EarlyFailure) or not failure.retryable:
                    raise failure
                if last_failure is not None:
                    # Only the failure raised from here is noted by the relay.
                    last_failure.note(state)
                last_failure = failure
        assert last_failure is not None
        raise last_failure
    finally:
        # The losers (or everything, when our caller went away): cancel their first-result
        # wait, which cancels their provider calls, then close them.
        for task, attempt in racing.items():
            if attempt is not winner:
                if winner is not None:
                    state.losers.append(attempt.endpoint)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await attempt.close()


def _backup(state: RequestState, primary: Endpoint, start: StartBackup[T]) -> Attempt[T] | None:
    """Starts the backup attempt of a hedge, if the attempt limit and budget allow."""
    model = state.model
    if state.attempts >= model.options.max_attempts:
        return None
    backup = state.next_endpoint()
    if backup is None:
        return None
    if not model.budget.try_spend():
        backup.breaker.release()
        return None
    timeout = state.time_remaining()
    if timeout is not None and timeout <= 0:
        backup.breaker.release()
        return None
    backup.hedges_total += 1
    log.info(
        "hedging: no first token yet, starting a backup",
        extra={"endpoint": primary.id, "backup": backup.id},
    )
    return start(backup, timeout)
