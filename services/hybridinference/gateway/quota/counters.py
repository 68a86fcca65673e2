"""The interface both counter stores (memory, Redis) implement, and what an admission holds."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from hybridinference.gateway.quota.limits import QuotaLimits, Refusal


class CountersUnavailable(Exception):
    """The shared counter store did not answer in time; the guard applies the failure mode.

    ``sent`` is False when the call never left (the store was skipped after a recent failure):
    then there is nothing the store could apply late, and nothing to undo.
    """

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class Reservation:
    """What a request may cost at most, charged when it is admitted and corrected on settle."""

    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Ticket:
    """An admitted (or attempted) request: settle or void it exactly once."""

    key_id: str
    ticket: str
    limits: QuotaLimits
    reserved: Reservation
    # When it was admitted: the reservation sits in that moment's minute, day and month, and
    # the refund on settle goes back to the same windows.
    admitted_at: float


class Counters(abc.ABC):
    @abc.abstractmethod
    async def admit(self, ticket: Ticket, hold_s: float) -> Refusal | None:
        """Checks every limit and, if none is reached, counts the request, takes an in-flight
        slot and charges the reservation (tokens to the current minute, cost to the day and
        month).

        A limit is reached when what is already charged (reservations included) is at the
        limit, so a burst can overshoot by at most the last admitted request's reservation.
        The slot expires on its own after ``hold_s`` (a crashed replica never settles it).
        """

    @abc.abstractmethod
    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        """Releases the slot and replaces the reservation by the actual tokens and cost.

        Idempotent: a ticket whose slot is gone (settled, voided or expired) changes nothing,
        so the guard may retry after an error whose reply was lost.
        """

    @abc.abstractmethod
    async def void(self, ticket: Ticket, hold_s: float) -> None:
        """Undoes an admission whose answer never arrived (the store timed out): if it was
        applied, its request, slot and reservation are taken back; if it arrives later, it is
        refused. Idempotent."""

    async def close(self) -> None:
        return None
