"""Planning: which endpoints one request may try, in which order.

Resolves the model (and a pinned endpoint), drops endpoints whose circuit is open or that asked
(RetryInfo) to be left alone, lets the model's strategy order the rest, and appends the fallback
models' endpoints. No I/O: a plan is pure bookkeeping over the table's live state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from hybridinference.common.chat_features import features_used, supports_all, unsupported
from hybridinference.common.errors import (
    FieldViolation,
    ServiceError,
    invalid_argument,
    unsupported_parameter,
)
from hybridinference.router.endpoints import Endpoint, EndpointTable, Model
from hybridinference.router.strategies import Overloaded, Strategy
from hybridinference.router.v1 import router_pb2


class PlanOverloaded(Exception):
    """The model's strategy found no endpoint that can serve the request within its SLO now."""

    def __init__(self, model: Model, overloaded: Overloaded) -> None:
        super().__init__(str(overloaded))
        self.model = model
        self.retry_after_s = overloaded.retry_after_s


@dataclass
class Plan:
    """The endpoints to try, in order, for one request."""

    model: Model
    order: list[Endpoint]
    pinned: bool
    # Seconds until an endpoint that is out of rotation (open circuit, RetryInfo) takes
    # requests again; None when none is.
    retry_after_s: float | None = None

    def hint(self, seconds: float) -> None:
        """Keeps the soonest time an endpoint takes requests again."""
        if seconds > 0 and (self.retry_after_s is None or seconds < self.retry_after_s):
            self.retry_after_s = seconds


def make_plan(
    table: EndpointTable,
    strategies: Mapping[str, Strategy],
    request: router_pb2.RouteRequest,
    now: float,
) -> Plan:
    """The endpoints to try, in order, and whether the request is pinned (no fallback)."""
    model = table.models.get(request.model)
    if model is None:
        known = ", ".join(sorted(table.models)) or "(none)"
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"model {request.model!r} not found; known models: {known}",
            "model_not_found",
            metadata={"model": request.model},
        )
    # Only models that declare every feature the request uses are candidates (the gateway checks
    # the asked-for model first; this keeps fallbacks honest too).
    uses = features_used(request.messages, request.sampling, request.options)
    if uses and (problems := unsupported(uses, model.options.capabilities, model.name)):
        raise unsupported_parameter(problems)
    if request.pinned_endpoint:
        return Plan(model, [_pinned(model, request.pinned_endpoint)], True)
    plan = Plan(model, [], False)
    candidates = _usable(model.endpoints, None, plan, now)
    if candidates:
        try:
            plan.order = strategies[model.name].order(candidates, request)
        except Overloaded as overloaded:
            raise PlanOverloaded(model, overloaded) from None
    fallbacks = model.options.fallbacks
    if fallbacks:
        seen = {e.id for e in model.endpoints}
        for name in fallbacks:
            fallback = table.models.get(name)
            if fallback is None:
                continue
            if uses and not supports_all(uses, fallback.options.capabilities):
                # A fallback that would ignore part of the request is no fallback.
                continue
            candidates = _usable(fallback.endpoints, seen, plan, now)
            if candidates:
                plan.order.extend(strategies[name].order(candidates, request))
            seen.update(e.id for e in fallback.endpoints)
    return plan


def _pinned(model: Model, endpoint_id: str) -> Endpoint:
    for endpoint in model.endpoints:
        if endpoint.id == endpoint_id:
            # Pinned means exactly this endpoint, healthy, open circuit or not: the caller
            # chose it (e.g. to debug it) and gets its real answer.
            return endpoint
    allowed = ", ".join(e.id for e in model.endpoints)
    raise invalid_argument(
        [
            FieldViolation(
                "pinned_endpoint",
                f"{endpoint_id!r} is not an endpoint of model {model.name!r}; "
                f"expected one of: {allowed}",
            )
        ]
    )


def _usable(
    endpoints: tuple[Endpoint, ...], seen: set[str] | None, plan: Plan, now: float
) -> list[Endpoint]:
    """Endpoints whose circuit lets requests through and that did not ask to be left alone;
    the healthy ones among them, or all of them when none is healthy (probes may lag)."""
    allowed: list[Endpoint] = []
    healthy: list[Endpoint] = []
    for endpoint in endpoints:
        # Hot path (runs for every endpoint of every request): plain attribute reads only.
        if endpoint.breaker.closed and endpoint.retry_after_until <= now:
            if seen is None or endpoint.id not in seen:
                allowed.append(endpoint)
                if endpoint.healthy:
                    healthy.append(endpoint)
            continue
        if seen is not None and endpoint.id in seen:
            continue
        wait = max(endpoint.breaker.retry_in_s(), endpoint.retry_after_until - now)
        if wait > 0 or not endpoint.breaker.available():
            plan.hint(wait)
            continue
        allowed.append(endpoint)
        if endpoint.healthy:
            healthy.append(endpoint)
    return healthy or allowed
