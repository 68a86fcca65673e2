"""Applies a key's quotas around one request: admit before routing, settle once it ended.

Semantics: at admission a request is counted (requests per minute), takes an in-flight slot
and reserves what it may cost at most (reservation.py: prompt bound + max_tokens, at the
model's dearest prices) against tokens per minute and the day's and month's spend. A request
is refused once what is charged (reservations included) reached a limit, so however many
requests arrive at once, a limit is overshot by at most one request's reservation. On settle
the reservation is replaced by the actual tokens and cost (the difference is refunded).
Requests and tokens per minute use a sliding minute (windows.py); budgets are UTC days and
months.

Counter-store failures: an admission whose answer was lost is voided in the background (so a
late-applied admission cannot leak a slot or a reservation), and settles and voids are retried
with back-off a bounded number of times; a slot that still cannot be released expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from hybridinference.common.edge_settings import KeyLimitSettings, QuotaSettings
from hybridinference.gateway import metrics as gateway_metrics
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.quota.counters import (
    Counters,
    CountersUnavailable,
    Reservation,
    Ticket,
)
from hybridinference.gateway.quota.limits import (
    QuotaLimits,
    quota_exceeded,
    quota_store_unavailable,
)
from hybridinference.gateway.quota.memory import MemoryCounters
from hybridinference.gateway.quota.reservation import Reserver
from hybridinference.keys.model import ApiKey

__all__ = ["QuotaGuard", "Ticket", "open_counters"]

log = logging.getLogger(__name__)
# Back-off between retries of a settle or void doubles up to this.
_MAX_BACKOFF_S = 5.0


def open_counters(settings: QuotaSettings) -> Counters:
    if settings.redis_url:
        from hybridinference.gateway.quota.redis_counters import RedisCounters

        return RedisCounters(
            settings.redis_url,
            settings.redis_key_prefix,
            settings.redis_timeout_s,
            settings.redis_retry_after_s,
        )
    return MemoryCounters()


class QuotaGuard:
    def __init__(
        self,
        counters: Counters,
        defaults: KeyLimitSettings,
        fail_open: bool,
        hold_s: float,
        reserver: Reserver | None = None,
        settle_attempts: int = 8,
        settle_backoff_s: float = 0.2,
    ) -> None:
        self._counters = counters
        self._defaults = defaults
        self._fail_open = fail_open
        # How long an in-flight slot may be held at most (the longest request plus slack).
        self._hold_s = hold_s
        self._reserver = reserver
        self._attempts = settle_attempts
        self._backoff_s = settle_backoff_s
        self._background: set[asyncio.Task[None]] = set()

    def limits_for(self, key: ApiKey) -> QuotaLimits:
        return QuotaLimits.resolve(key.limits, self._defaults)

    def reservation(self, call: ChatCall | None) -> Reservation:
        if call is None or self._reserver is None:
            return Reservation()
        sampling = call.sampling
        # Admission has set default_max_tokens to the model's cap when the request set none.
        max_tokens = (
            sampling.max_tokens
            if sampling.HasField("max_tokens")
            else (sampling.default_max_tokens or None)
        )
        return self._reserver.reserve(call.model, call.messages, max_tokens)

    async def admit(self, key: ApiKey, call: ChatCall | None = None) -> Ticket | None:
        """Raises ServiceError (429, or 503 when the store is down and failing closed)."""
        limits = self.limits_for(key)
        if limits.unlimited:
            return None
        ticket = Ticket(key.id, uuid.uuid4().hex, limits, self.reservation(call), time.time())
        try:
            refusal = await self._counters.admit(ticket, self._hold_s)
        except CountersUnavailable as error:
            gateway_metrics.QUOTA_STORE_ERRORS.labels("admit").inc()
            if error.sent:
                # The store may have applied the admission and lost only the answer (or apply
                # it later): take it back, and forbid it should it arrive after that.
                self._run(lambda: self._counters.void(ticket, self._hold_s), "void")
            if self._fail_open:
                return None
            raise quota_store_unavailable() from None
        if refusal is not None:
            raise quota_exceeded(key.id, refusal)
        return ticket

    def settle(self, ticket: Ticket | None, tokens: int, cost_usd: float) -> None:
        """Charges in the background: the client's reply never waits for the counters."""
        if ticket is None:
            return
        self._run(lambda: self._counters.settle(ticket, tokens, cost_usd), "settle")

    def _run(self, operation: Callable[[], Awaitable[None]], what: str) -> None:
        task = asyncio.create_task(self._retrying(operation, what))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retrying(self, operation: Callable[[], Awaitable[None]], what: str) -> None:
        # Settles and voids are idempotent (counters.py), so a retry after a lost answer is safe.
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                await operation()
                return
            except CountersUnavailable:
                gateway_metrics.QUOTA_STORE_ERRORS.labels(what).inc()
                if attempt == self._attempts:
                    gateway_metrics.QUOTA_GAVE_UP.labels(what).inc()
                    log.warning(
                        "quota %s gave up after %d attempts; its slot expires on its own",
                        what,
                        attempt,
                    )
                    return
            except Exception:
                log.exception("quota %s failed", what)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    @property
    def pending(self) -> int:
        """Settles and voids not finished yet (retrying ones included)."""
        return len(self._background)

    async def close(self) -> None:
        if self._background:
            _, running = await asyncio.wait(self._background, timeout=2.0)
            for task in running:
                task.cancel()
        await self._counters.close()
