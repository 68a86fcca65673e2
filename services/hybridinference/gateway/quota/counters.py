"""The interface both counter stores (memory, Redis) implement."""

from __future__ import annotations

import abc

from hybridinference.gateway.quota.limits import QuotaLimits, Refusal


class CountersUnavailable(Exception):
    """The shared counter store did not answer in time; the guard applies the failure mode."""


class Counters(abc.ABC):
    @abc.abstractmethod
    async def admit(
        self, key_id: str, ticket: str, limits: QuotaLimits, now: float, hold_s: float
    ) -> Refusal | None:
        """Checks every limit and, if none is reached, counts the request and takes a slot.

        ``ticket`` names the in-flight slot (released by ``settle``); a slot not released within
        ``hold_s`` (a crashed replica) expires on its own.
        """

    @abc.abstractmethod
    async def settle(
        self,
        key_id: str,
        ticket: str,
        limits: QuotaLimits,
        tokens: int,
        cost_usd: float,
        now: float,
    ) -> None:
        """Releases the slot and charges tokens and cost, known only once a request ended."""

    async def close(self) -> None:
        return None
