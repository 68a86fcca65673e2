"""Routes one request: plan its endpoints, run attempts until one produces a first result.

Before the first event a transient failure moves on to the next candidate (within the model's
attempt limit and retry budget, after a jittered backoff, never past the caller's deadline);
after it there is no silent retry (the client already has tokens), so the provider's status
reaches the caller as-is. With hedging on, a request that has no first token by its endpoint's
p90 TTFT gets a backup on the next candidate; the first to produce a token wins.

The parts: planning.py (which endpoints, in which order), attempt.py (one provider call and its
bookkeeping, streamed or unary), hedging.py (the race of a primary and a backup), and
request_state.py (the per-request object they share).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.settings import RouterSettings
from hybridinference.router import metrics as router_metrics
from hybridinference.router.admission import Admission
from hybridinference.router.attempt import (
    Attempt,
    EarlyFailure,
    Launch,
    StreamAttempt,
    UnaryAttempt,
)
from hybridinference.router.breaker import Clock
from hybridinference.router.endpoints import Endpoint, EndpointTable
from hybridinference.router.health import HealthMonitor
from hybridinference.router.hedging import race
from hybridinference.router.planning import Plan, make_plan
from hybridinference.router.request_state import RequestState, TimeRemaining
from hybridinference.router.retry import Backoff
from hybridinference.router.strategies import Strategy
from hybridinference.router.v1 import router_pb2

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
# Makes an attempt of one kind (StreamAttempt or UnaryAttempt) on an endpoint.
Launcher = Callable[[RequestState, Endpoint, Launch], Attempt[T]]


class Relay:
    def __init__(
        self,
        table: EndpointTable,
        health: HealthMonitor,
        strategies: Mapping[str, Strategy],
        settings: RouterSettings | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._table = table
        self._health = health
        self._strategies = strategies
        settings = settings or RouterSettings()
        rng = rng or random.Random()
        self._backoff = Backoff(
            settings.backoff_base_ms / 1000, settings.backoff_max_ms / 1000, rng.uniform
        )
        self._clock = clock
        self._sleep = sleep
        self._admission = Admission()

    @property
    def table(self) -> EndpointTable:
        return self._table

    def replace(self, table: EndpointTable, strategies: Mapping[str, Strategy]) -> None:
        """Switches to a reloaded configuration. Requests already routed keep the endpoints
        they hold; only new requests see the new table."""
        self._table = table
        self._strategies = strategies

    def plan(self, request: router_pb2.RouteRequest) -> Plan:
        """The endpoints to try, in order, and whether the request is pinned (no fallback)."""
        return make_plan(self._table, self._strategies, request, self._clock())

    async def route(
        self, request: router_pb2.RouteRequest, time_remaining: TimeRemaining
    ) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Streams the routed generation; raises ServiceError when it cannot be served."""
        state = await self._start(request, time_remaining)
        attempt, first = await self._first_result(state, StreamAttempt)
        assert isinstance(attempt, StreamAttempt)
        # aclosing: when our caller closes this generator mid-stream, the attempt's generator
        # must close now too, since its cleanup cancels the provider call.
        async with contextlib.aclosing(attempt.rest()) as rest:
            if first.HasField("completion"):
                _count_losers(state, first.completion)
            yield first
            async for response in rest:
                if response.HasField("completion"):
                    _count_losers(state, response.completion)
                yield response

    async def route_unary(
        self, request: router_pb2.RouteRequest, time_remaining: TimeRemaining
    ) -> router_pb2.RouteUnaryResponse:
        """The whole routed reply, from the provider's GenerateUnary; raises ServiceError when
        it cannot be served."""
        state = await self._start(request, time_remaining)
        _, reply = await self._first_result(state, UnaryAttempt)
        _count_losers(state, reply.completion)
        return reply

    async def _start(
        self, request: router_pb2.RouteRequest, time_remaining: TimeRemaining
    ) -> RequestState:
        received_at = self._clock()
        plan = await self._admission.admit(lambda: self.plan(request), time_remaining, self._clock)
        plan.model.budget.record_request()
        state = RequestState(
            request,
            plan,
            time_remaining,
            self._clock,
            self._health,
            on_release=self._admission.notify,
            received_at=received_at,
        )
        if not plan.order:
            raise state.exhausted_error("every endpoint's circuit is open")
        return state

    async def _first_result(
        self, state: RequestState, launcher: Launcher[T]
    ) -> tuple[Attempt[T], T]:
        """Runs attempts (retrying and hedging as configured) until one has a first result."""
        model = state.model
        options = model.options
        hedging = options.hedging and not state.plan.pinned
        while (endpoint := state.next_endpoint()) is not None:
            if state.attempts:
                delay = self._retry_delay(state)
                if isinstance(delay, str):
                    endpoint.breaker.release()
                    state.stop_reason = delay
                    break
                remaining = state.time_remaining()
                if remaining is not None and remaining <= delay:
                    endpoint.breaker.release()
                    raise state.deadline_error()
                await self._sleep(delay)
                router_metrics.note_retry(model)
            timeout = state.time_remaining()
            if timeout is not None and timeout <= 0:
                endpoint.breaker.release()
                raise state.deadline_error()
            attempt = launcher(state, endpoint, Launch(timeout))
            try:
                if hedging:
                    attempt, first = await race(
                        state,
                        attempt,
                        lambda backup, timeout: launcher(state, backup, Launch(timeout, True)),
                    )
                else:
                    first = await attempt.first()
            except EarlyFailure as early:
                early.note(state)
                if state.plan.pinned or not early.retryable:
                    raise from_rpc_error(early.error) from None
                continue
            router_metrics.note_routed(model, attempt.endpoint.id)
            return attempt, first
        raise state.exhausted_error()

    def _retry_delay(self, state: RequestState) -> float | str:
        """The backoff before another attempt, or why there is none (limit, budget)."""
        model = state.model
        limit = model.options.max_attempts
        if state.attempts >= limit:
            return f"attempt limit {limit} reached"
        if not model.budget.try_spend():
            return "retry budget exhausted"
        return self._backoff.delay_s(state.attempts)


def _count_losers(state: RequestState, completion: router_pb2.Completion) -> None:
    """Adds what the request's losing hedge attempts cost (their prompts) to its cost, and to
    each loser's wasted spend."""
    if not state.losers:
        return
    prompt_tokens = completion.usage.prompt_tokens
    for loser in state.losers:
        loser.wasted_usd += loser.price_prompt_per_1m * prompt_tokens / 1_000_000
    completion.cost_usd += state.wasted_usd(prompt_tokens)
