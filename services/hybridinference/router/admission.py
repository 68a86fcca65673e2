"""Admission control: what happens to a request that no endpoint can serve within its SLO.

Rather than piling onto a saturated endpoint, the request waits at the router for a slot to
free (every attempt that ends wakes the waiters, who plan again), within a bound: at most
``admission_queue`` waiting requests per model, each for at most ``admission_wait_ms`` and never
past its deadline. Beyond that it is refused with RESOURCE_EXHAUSTED and a RetryInfo delay, which
the gateway turns into HTTP 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.router import metrics as router_metrics
from hybridinference.router.endpoints import Model
from hybridinference.router.planning import Plan, PlanOverloaded
from hybridinference.router.request_state import TimeRemaining


class Admission:
    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}
        self._freed = asyncio.Event()

    def notify(self) -> None:
        """An attempt ended: wake the waiters so they plan again."""
        if self._waiting:
            self._freed.set()

    def waiting(self, model: str) -> int:
        return self._waiting.get(model, 0)

    async def admit(
        self, plan: Callable[[], Plan], time_remaining: TimeRemaining, clock: Callable[[], float]
    ) -> Plan:
        """A plan, once one can be made; raises ServiceError(RESOURCE_EXHAUSTED) past the bound."""
        try:
            return plan()
        except PlanOverloaded as overloaded:
            first = overloaded
        model = first.model
        options = model.options.hybrid
        if self.waiting(model.name) >= options.admission_queue:
            raise self._reject(model, first)
        give_up_at = clock() + options.admission_wait_ms / 1000
        self._waiting[model.name] = self.waiting(model.name) + 1
        router_metrics.note_admission(model, "queued")
        try:
            last = first
            while True:
                left = give_up_at - clock()
                remaining = time_remaining()
                if remaining is not None:
                    left = min(left, remaining)
                if left <= 0:
                    raise self._reject(model, last)
                freed = self._freed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), left)
                if freed.is_set():
                    # One event per wake-up round: every waiter re-plans, later ones wait anew.
                    self._freed = asyncio.Event()
                try:
                    return plan()
                except PlanOverloaded as overloaded:
                    last = overloaded
        finally:
            self._waiting[model.name] -= 1
            if not self._waiting[model.name]:
                del self._waiting[model.name]

    def _reject(self, model: Model, overloaded: PlanOverloaded) -> ServiceError:
        router_metrics.note_admission(model, "rejected")
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"no endpoint of model {model.name!r} can serve the request within its TTFT SLO "
            f"({model.options.ttft_slo_ms:.0f} ms): {overloaded}",
            "overloaded",
            retry_after_s=overloaded.retry_after_s,
            metadata={"model": model.name},
        )
