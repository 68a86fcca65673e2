"""The per-request object: one routed request across its attempts.

It carries what every step needs (the request, its plan, the caller's deadline, the relay's clock
and health monitor) and what the request has learned so far (attempts, failures, unreachable
workers, the soonest retry hint), so planning, attempts and hedging pass one object around.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.router.breaker import Clock
from hybridinference.router.endpoints import Endpoint, Model
from hybridinference.router.health import HealthMonitor
from hybridinference.router.planning import Plan
from hybridinference.router.v1 import router_pb2

log = logging.getLogger(__name__)

# Seconds left of the caller's deadline, None when it has none (grpc's context.time_remaining).
TimeRemaining = Callable[[], float | None]


@dataclass
class RequestState:
    request: router_pb2.RouteRequest
    plan: Plan
    time_remaining: TimeRemaining
    clock: Clock
    health: HealthMonitor
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    # The status of each attempt that failed before its first output, in order.
    codes: list[grpc.StatusCode] = field(default_factory=list)
    # Why no further attempt was made although candidates were left (e.g. the attempt limit).
    stop_reason: str = ""
    # Workers found unreachable during this request: their other endpoints would fail the
    # same way, so they are skipped rather than costing another attempt.
    unreachable: set[str] = field(default_factory=set)
    # Called whenever an attempt of this request ends (its slot is free again).
    on_release: Callable[[], None] = lambda: None
    # Hedge attempts that lost: their prompts were billed too.
    losers: list[Endpoint] = field(default_factory=list)
    # When the router received the request (clock time, before admission): the attempt that
    # serves reports its queueing from here.
    received_at: float = 0.0
    _candidates: Iterator[Endpoint] = field(init=False)

    def __post_init__(self) -> None:
        self._candidates = iter(self.plan.order)

    @property
    def model(self) -> Model:
        return self.plan.model

    def next_endpoint(self) -> Endpoint | None:
        """The next candidate that may be sent a request now, its circuit slot claimed."""
        for endpoint in self._candidates:
            if endpoint.worker.name in self.unreachable:
                self.failures.append(f"{endpoint.id}: skipped, worker unreachable")
                continue
            if self.plan.pinned or endpoint.breaker.acquire():
                return endpoint
            # Another request is already probing this half-open endpoint.
            self.failures.append(f"{endpoint.id}: skipped, circuit {endpoint.breaker.state.value}")
            self.plan.hint(endpoint.breaker.retry_in_s())
        return None

    def note_failure(
        self, endpoint: Endpoint, error: grpc.aio.AioRpcError, reachable: bool, hint: float | None
    ) -> None:
        """Records an attempt that failed before its first event."""
        if not reachable:
            self.unreachable.add(endpoint.worker.name)
        if hint:
            self.plan.hint(hint)
        self.failures.append(f"{endpoint.id}: {error.code().name}: {error.details()}")
        self.codes.append(error.code())
        log.warning(
            "attempt failed before the first token",
            extra={"endpoint": endpoint.id, "attempt": self.attempts, "code": error.code().name},
        )

    def wasted_usd(self, prompt_tokens: int) -> float:
        """What the losing hedge attempts cost: the prompt, billed on each (no output)."""
        return sum(e.price_prompt_per_1m for e in self.losers) * prompt_tokens / 1_000_000

    # Errors.

    def deadline_error(self) -> ServiceError:
        if self.failures:
            log.warning(
                "deadline exceeded before an endpoint answered",
                extra={"model": self.request.model, "failures": "; ".join(self.failures)},
            )
        tried = f" ({self.attempts} attempt(s) failed)" if self.attempts else ""
        return ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"deadline exceeded before an endpoint answered{tried}",
            "deadline_exceeded",
        )

    def exhausted_error(self, why: str = "") -> ServiceError:
        # Endpoint ids, worker addresses and upstream details are for the logs; the client
        # learns how many attempts failed and why, in general terms.
        if self.failures:
            log.warning(
                "no endpoint could serve the request",
                extra={"model": self.request.model, "failures": "; ".join(self.failures)},
            )
        counts = Counter(code.name for code in self.codes)
        parts = [f"{name} x{n}" if n > 1 else name for name, n in counts.items()]
        general = [self.stop_reason] if self.stop_reason else []
        detail = why or "; ".join([*parts, *general]) or "no endpoint available"
        if self.codes and all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code in self.codes):
            # Every candidate tried was rate limited: a 429 with Retry-After, not a 503.
            return ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"every endpoint of model {self.request.model!r} tried is rate limited "
                f"({self.attempts} attempt(s)); retry later",
                "rate_limited",
                retry_after_s=self.plan.retry_after_s,
                metadata={"model": self.request.model},
            )
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"no endpoint of model {self.request.model!r} could serve the request after "
            f"{self.attempts} attempt(s): {detail}",
            "no_healthy_endpoint",
            retry_after_s=self.plan.retry_after_s,
            metadata={"model": self.request.model},
        )
