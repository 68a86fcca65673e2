"""Routes one request: resolve the model, order its endpoints, and relay the provider's stream.

Before the first event a transient failure moves on to the next candidate; after it there is no
silent retry (the client already has tokens), so the provider's status reaches the caller as-is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

import grpc

from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.v1 import router_pb2
from services.common.errors import FieldViolation, ServiceError, from_rpc_error, invalid_argument
from services.router.endpoints import Endpoint, EndpointTable
from services.router.health import HealthMonitor, filter_healthy
from services.router.strategies import Strategy

log = logging.getLogger(__name__)

# Failures before the first event that another endpoint may not share. Client errors
# (INVALID_ARGUMENT, NOT_FOUND, ...) would fail the same way everywhere, so they are returned.
RETRYABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)

# Seconds left of the caller's deadline, None when it has none (grpc's context.time_remaining).
TimeRemaining = Callable[[], float | None]


class Relay:
    def __init__(
        self, table: EndpointTable, health: HealthMonitor, strategies: Mapping[str, Strategy]
    ) -> None:
        self._table = table
        self._health = health
        self._strategies = strategies

    def plan(self, request: router_pb2.RouteRequest) -> tuple[list[Endpoint], bool]:
        """The endpoints to try, in order, and whether the request is pinned (no fallback)."""
        model = self._table.models.get(request.model)
        if model is None:
            known = ", ".join(sorted(self._table.models)) or "(none)"
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"model {request.model!r} not found; known models: {known}",
                "model_not_found",
                metadata={"model": request.model},
            )
        if request.pinned_endpoint:
            for endpoint in model.endpoints:
                if endpoint.id == request.pinned_endpoint:
                    # Pinned means exactly this endpoint, healthy or not: the caller chose it.
                    return [endpoint], True
            allowed = ", ".join(e.id for e in model.endpoints)
            raise invalid_argument(
                [
                    FieldViolation(
                        "pinned_endpoint",
                        f"{request.pinned_endpoint!r} is not an endpoint of model "
                        f"{model.name!r}; expected one of: {allowed}",
                    )
                ]
            )
        candidates = filter_healthy(model.endpoints)
        return self._strategies[model.name].order(candidates, request), False

    async def route(
        self, request: router_pb2.RouteRequest, time_remaining: TimeRemaining
    ) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Streams the routed generation; raises ServiceError when it cannot be served."""
        order, pinned = self.plan(request)
        failures: list[str] = []
        # Workers found unreachable during this request: their other endpoints would fail the
        # same way, so they are skipped rather than costing another attempt.
        unreachable: set[str] = set()
        attempt = 0
        for endpoint in order:
            if endpoint.worker.name in unreachable:
                failures.append(f"{endpoint.id}: skipped, worker unreachable")
                continue
            attempt += 1
            timeout = time_remaining()
            if timeout is not None and timeout <= 0:
                tried = f" (tried {'; '.join(failures)})" if failures else ""
                raise ServiceError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"deadline exceeded before an endpoint answered{tried}",
                    "deadline_exceeded",
                )
            try:
                # aclosing: when our caller closes this generator mid-stream, the attempt's
                # generator must close now too, since its cleanup cancels the provider call.
                async with contextlib.aclosing(
                    self._attempt(request, endpoint, attempt, timeout)
                ) as stream:
                    async for response in stream:
                        yield response
                return
            except _EarlyFailure as early:
                error = early.error
                if self._health.record_failure(endpoint, error):
                    unreachable.add(endpoint.worker.name)
                if pinned or error.code() not in RETRYABLE:
                    raise from_rpc_error(error) from None
                failures.append(f"{endpoint.id}: {error.code().name}: {error.details()}")
                log.warning(
                    "attempt failed before the first token",
                    extra={"endpoint": endpoint.id, "attempt": attempt, "code": error.code().name},
                )
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"no endpoint of model {request.model!r} could serve the request after "
            f"{attempt} attempt(s): " + "; ".join(failures),
            "no_healthy_endpoint",
            metadata={"model": request.model},
        )

    async def _attempt(
        self,
        request: router_pb2.RouteRequest,
        endpoint: Endpoint,
        attempt: int,
        timeout: float | None,  # noqa: ASYNC109 - handed to gRPC as the call's deadline
    ) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Relays one provider call.

        Raises _EarlyFailure when it failed before its first event (the caller decides whether
        another endpoint gets a go); a later failure is final and raised as a ServiceError.
        """
        call = endpoint.worker.stub.Generate(_generate_request(request, endpoint), timeout=timeout)
        endpoint.requests_total += 1
        endpoint.in_flight += 1
        started = completed = False
        try:
            async for event in call:
                response = router_pb2.RouteResponse(delta=event.delta)
                if not started:
                    started = True
                    response.selection.CopyFrom(_selection(endpoint, event, attempt))
                if event.HasField("usage") or event.finish_reason:
                    completed = True
                    response.completion.CopyFrom(_completion(endpoint, event))
                yield response
            if not completed:
                # The provider ended cleanly without a final event; the caller still gets
                # exactly one selection and one completion.
                response = router_pb2.RouteResponse()
                if not started:
                    response.selection.CopyFrom(_selection(endpoint, None, attempt))
                response.completion.CopyFrom(_completion(endpoint, None))
                yield response
        except grpc.aio.AioRpcError as error:
            endpoint.failures_total += 1
            if not started:
                raise _EarlyFailure(error) from None
            # After the first token the client has partial output: no silent retry.
            self._health.record_failure(endpoint, error)
            raise from_rpc_error(error) from None
        finally:
            endpoint.in_flight -= 1
            # No-op when the call finished; otherwise (caller cancelled, stream closed) this is
            # what cancels the provider's generation.
            call.cancel()


class _EarlyFailure(Exception):
    """A provider call failed before its first event, so another endpoint may still serve."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error


def _generate_request(
    request: router_pb2.RouteRequest, endpoint: Endpoint
) -> provider_pb2.GenerateRequest:
    generate = provider_pb2.GenerateRequest(
        request_id=request.request_id, endpoint=endpoint.id, messages=request.messages
    )
    if request.HasField("sampling"):
        generate.sampling.CopyFrom(request.sampling)
    return generate


def _selection(
    endpoint: Endpoint, event: provider_pb2.GenerateResponse | None, attempt: int
) -> router_pb2.Selection:
    return router_pb2.Selection(
        endpoint=endpoint.id,
        provider=endpoint.provider,
        served_model=(event.model if event is not None else "") or endpoint.model,
        attempts=attempt,
    )


def _completion(
    endpoint: Endpoint, event: provider_pb2.GenerateResponse | None
) -> router_pb2.Completion:
    completion = router_pb2.Completion()
    if event is not None:
        completion.usage.CopyFrom(event.usage)
        completion.finish_reason = event.finish_reason
    completion.cost_usd = endpoint.cost_usd(completion.usage)
    return completion
