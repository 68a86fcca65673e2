"""Applies a key's quotas around one request: admit before routing, settle once it ended.

Semantics: requests per minute and in-flight requests are counted at admission. Tokens and cost
are known only after a request completed, so they are charged then, and the *next* request is
refused once the minute's tokens or the day's / month's spend reached the limit (one request
may overshoot). Windows are fixed UTC minutes, days and months.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from hybridinference.common.edge_settings import KeyLimitSettings, QuotaSettings
from hybridinference.gateway.quota.counters import Counters, CountersUnavailable
from hybridinference.gateway.quota.limits import (
    QuotaLimits,
    quota_exceeded,
    quota_store_unavailable,
)
from hybridinference.gateway.quota.memory import MemoryCounters
from hybridinference.keys.model import ApiKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ticket:
    """An admitted request: settle it exactly once."""

    key_id: str
    ticket: str
    limits: QuotaLimits


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
    ) -> None:
        self._counters = counters
        self._defaults = defaults
        self._fail_open = fail_open
        # How long an in-flight slot may be held at most (the longest request plus slack).
        self._hold_s = hold_s
        self._settling: set[asyncio.Task[None]] = set()

    def limits_for(self, key: ApiKey) -> QuotaLimits:
        return QuotaLimits.resolve(key.limits, self._defaults)

    async def admit(self, key: ApiKey) -> Ticket | None:
        """Raises ServiceError (429, or 503 when the store is down and failing closed)."""
        limits = self.limits_for(key)
        if limits.unlimited:
            return None
        ticket = Ticket(key.id, uuid.uuid4().hex, limits)
        try:
            refusal = await self._counters.admit(
                key.id, ticket.ticket, limits, time.time(), self._hold_s
            )
        except CountersUnavailable:
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
        task = asyncio.create_task(self._settle(ticket, tokens, cost_usd))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        try:
            await self._counters.settle(
                ticket.key_id, ticket.ticket, ticket.limits, tokens, cost_usd, time.time()
            )
        except CountersUnavailable:
            pass  # Logged by the counters; the slot expires on its own.
        except Exception:
            log.exception("quota settle failed")

    async def close(self) -> None:
        if self._settling:
            await asyncio.wait(self._settling, timeout=2.0)
        await self._counters.close()
