"""A circuit breaker per endpoint: closed → open after N consecutive failures → half-open after a
cool-down (one probe request at a time) → closed on the probe's success, open again on failure.

Time comes from an injected clock so the state machine is tested without sleeping.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import grpc

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Outcomes that say something about the endpoint: overload (429), server errors (5xx) and
# timeouts (408/504), plus a rejected credential (401), which will not fix itself per request.
# Other client errors (400, 404, ...) are the request's fault and do not count.
COUNTS_AGAINST_ENDPOINT: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


# Where a peer's rich status (ErrorInfo, RetryInfo...) travels; gRPC's own client-side
# deadline carries none.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def counts_against_endpoint(error: grpc.aio.AioRpcError, caller_deadline: bool) -> bool:
    """Whether a failed provider call is the endpoint's fault and feeds its breaker.

    ``caller_deadline``: the call ran under a deadline handed down from the router's caller.
    A DEADLINE_EXCEEDED without a rich status is then gRPC's client-side timer firing on that
    deadline: the caller chose to give up early, which says nothing about the endpoint (a caller
    sending short deadlines must not be able to open the operator's circuits). The provider's own
    first-token and idle timeouts arrive as DEADLINE_EXCEEDED with an ErrorInfo reason and do count.
    """
    code = error.code()
    if code not in COUNTS_AGAINST_ENDPOINT:
        return False
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and caller_deadline:
        trailing = error.trailing_metadata() or ()
        return any(key == _STATUS_DETAILS_KEY for key, _ in trailing)
    return True


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int, cooldown_s: float, clock: Clock) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("breaker needs failure_threshold >= 1 and cooldown_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        # Mirrors `_state is CLOSED` as a plain attribute: the router's per-request filter reads
        # it for every endpoint, and an attribute is several times cheaper than a call.
        self.closed = True
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.opened_total = 0

    @property
    def state(self) -> CircuitState:
        """The state now; an open breaker whose cool-down has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self.retry_in_s() == 0.0:
            return CircuitState.HALF_OPEN
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when not open."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def available(self) -> bool:
        """Whether a request could be sent now (without claiming the half-open probe slot)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self._probe_in_flight

    def acquire(self) -> bool:
        """Claims permission for one request; in half-open only one probe is let through."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._state = CircuitState.HALF_OPEN
            self.closed = False
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._probe_in_flight = False
        if self._state is not CircuitState.CLOSED:
            log.warning("circuit closed", extra={"endpoint": self.name})
            self._state = CircuitState.CLOSED
            self.closed = True

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        was_probe = self._state is CircuitState.HALF_OPEN
        self._probe_in_flight = False
        if was_probe or (
            self._state is CircuitState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self._open()

    def release(self) -> None:
        """A request ended with no verdict (e.g. the client cancelled): free the probe slot."""
        self._probe_in_flight = False

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self.closed = False
        self._opened_at = self._clock()
        self.opened_total += 1
        log.warning(
            "circuit opened",
            extra={
                "endpoint": self.name,
                "consecutive_failures": self.consecutive_failures,
                "cooldown_s": self.cooldown_s,
            },
        )

    def configure(self, failure_threshold: int, cooldown_s: float) -> None:
        """New thresholds from a reloaded config; the current state is kept."""
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
