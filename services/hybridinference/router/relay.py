"""Routes one request: resolve the model, order its endpoints, and relay the provider's stream.

Before the first event a transient failure moves on to the next candidate (within the model's
attempt limit and retry budget, after a jittered backoff, never past the caller's deadline);
after it there is no silent retry (the client already has tokens), so the provider's status
reaches the caller as-is. With hedging on, a request that has no first token by its endpoint's
p90 TTFT gets a backup on the next candidate; the first to produce a token wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import grpc

from hybridinference.common.chat_events import choice_events
from hybridinference.common.chat_features import features_used, supports_all, unsupported
from hybridinference.common.errors import (
    FieldViolation,
    ServiceError,
    from_rpc_error,
    invalid_argument,
    unsupported_parameter,
)
from hybridinference.common.settings import RouterSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.router import metrics as router_metrics
from hybridinference.router.breaker import COUNTS_AGAINST_ENDPOINT, Clock
from hybridinference.router.endpoints import (
    Endpoint,
    EndpointTable,
    GenerateCall,
    GenerateUnaryCall,
    Model,
)
from hybridinference.router.health import HealthMonitor
from hybridinference.router.retry import Backoff
from hybridinference.router.strategies import Strategy
from hybridinference.router.v1 import router_pb2

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
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Plan:
    """The endpoints to try, in order, for one request."""

    model: Model
    order: list[Endpoint]
    pinned: bool
    # Seconds until an endpoint that is out of rotation (open circuit, RetryInfo) takes
    # requests again; None when none is.
    retry_after_s: float | None = None


@dataclass
class _Outcome:
    """Bookkeeping of one request across its attempts."""

    failures: list[str]
    # Workers found unreachable during this request: their other endpoints would fail the
    # same way, so they are skipped rather than costing another attempt.
    unreachable: set[str]
    attempts: int = 0
    retry_after_s: float | None = None
    # The status of each attempt that failed before its first output, in order.
    codes: list[grpc.StatusCode] = field(default_factory=list)

    def hint(self, seconds: float) -> None:
        if seconds > 0 and (self.retry_after_s is None or seconds < self.retry_after_s):
            self.retry_after_s = seconds


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

    @property
    def table(self) -> EndpointTable:
        return self._table

    def replace(self, table: EndpointTable, strategies: Mapping[str, Strategy]) -> None:
        """Switches to a reloaded configuration. Requests already routed keep the endpoints
        they hold; only new requests see the new table."""
        self._table = table
        self._strategies = strategies

    # Planning.

    def plan(self, request: router_pb2.RouteRequest) -> Plan:
        """The endpoints to try, in order, and whether the request is pinned (no fallback)."""
        table = self._table
        model = table.models.get(request.model)
        if model is None:
            known = ", ".join(sorted(table.models)) or "(none)"
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"model {request.model!r} not found; known models: {known}",
                "model_not_found",
                metadata={"model": request.model},
            )
        # Only models that declare every feature the request uses are candidates (the
        # gateway checks the asked-for model first; this keeps fallbacks honest too).
        uses = features_used(request.messages, request.sampling, request.options)
        if uses and (problems := unsupported(uses, model.options.capabilities, model.name)):
            raise unsupported_parameter(problems)
        if request.pinned_endpoint:
            for endpoint in model.endpoints:
                if endpoint.id == request.pinned_endpoint:
                    # Pinned means exactly this endpoint, healthy, open circuit or not: the
                    # caller chose it (e.g. to debug it) and gets its real answer.
                    return Plan(model, [endpoint], True)
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
        plan = Plan(model, [], False)
        candidates = self._usable(model.endpoints, None, plan)
        if candidates:
            plan.order = self._strategies[model.name].order(candidates, request)
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
                candidates = self._usable(fallback.endpoints, seen, plan)
                if candidates:
                    plan.order.extend(self._strategies[name].order(candidates, request))
                seen.update(e.id for e in fallback.endpoints)
        return plan

    def _usable(
        self, endpoints: tuple[Endpoint, ...], seen: set[str] | None, plan: Plan
    ) -> list[Endpoint]:
        """Endpoints whose circuit lets requests through and that did not ask to be left alone;
        the healthy ones among them, or all of them when none is healthy (probes may lag)."""
        now = self._clock()
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
                if wait > 0 and (plan.retry_after_s is None or wait < plan.retry_after_s):
                    plan.retry_after_s = wait
                continue
            allowed.append(endpoint)
            if endpoint.healthy:
                healthy.append(endpoint)
        return healthy or allowed

    # Routing.

    async def route(
        self,
        request: router_pb2.RouteRequest,
        time_remaining: TimeRemaining,
        *,
        unary: bool = False,
    ) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Streams the routed generation; raises ServiceError when it cannot be served.

        ``unary``: each attempt asks the provider for the whole reply in one message
        (GenerateUnary), so the stream is one event with selection, all text and completion.
        """
        plan = self.plan(request)
        model = plan.model
        options = model.options
        model.budget.record_request()
        outcome = _Outcome([], set(), retry_after_s=plan.retry_after_s)
        if not plan.order:
            raise self._exhausted(request, outcome, "every endpoint's circuit is open")
        candidates = iter(plan.order)
        while (endpoint := self._next(candidates, outcome, plan.pinned)) is not None:
            if outcome.attempts:
                if outcome.attempts >= options.max_attempts:
                    outcome.failures.append(f"attempt limit {options.max_attempts} reached")
                    endpoint.breaker.release()
                    break
                if not model.budget.try_spend():
                    outcome.failures.append("retry budget exhausted")
                    endpoint.breaker.release()
                    break
                delay = self._backoff.delay_s(outcome.attempts)
                remaining = time_remaining()
                if remaining is not None and remaining <= delay:
                    endpoint.breaker.release()
                    raise self._deadline(outcome)
                await self._sleep(delay)
                router_metrics.note_retry(model)
            outcome.attempts += 1
            timeout = time_remaining()
            if timeout is not None and timeout <= 0:
                endpoint.breaker.release()
                raise self._deadline(outcome)
            stream = self._attempt(
                request, endpoint, outcome.attempts, timeout, hedged=False, unary=unary
            )
            try:
                if options.hedging and not plan.pinned:
                    stream, first = await self._race(
                        request, model, stream, endpoint, candidates, outcome, time_remaining, unary
                    )
                else:
                    first = await _first_event(stream)
            except _EarlyFailure as early:
                _note(outcome, early)
                error = early.error
                if plan.pinned or error.code() not in RETRYABLE:
                    raise from_rpc_error(error) from None
                continue
            router_metrics.note_routed(model, first.selection.endpoint)
            # aclosing: when our caller closes this generator mid-stream, the attempt's
            # generator must close now too, since its cleanup cancels the provider call.
            async with contextlib.aclosing(stream):
                yield first
                async for response in stream:
                    yield response
            return
        raise self._exhausted(request, outcome, "")

    def _next(
        self, candidates: Iterator[Endpoint], outcome: _Outcome, pinned: bool
    ) -> Endpoint | None:
        """The next candidate that may be sent a request now, its circuit slot claimed."""
        for endpoint in candidates:
            if endpoint.worker.name in outcome.unreachable:
                outcome.failures.append(f"{endpoint.id}: skipped, worker unreachable")
                continue
            if pinned or endpoint.breaker.acquire():
                return endpoint
            # Another request is already probing this half-open endpoint.
            outcome.failures.append(
                f"{endpoint.id}: skipped, circuit {endpoint.breaker.state.value}"
            )
            outcome.hint(endpoint.breaker.retry_in_s())
        return None

    async def _race(
        self,
        request: router_pb2.RouteRequest,
        model: Model,
        primary: AsyncGenerator[router_pb2.RouteResponse, None],
        endpoint: Endpoint,
        candidates: Iterator[Endpoint],
        outcome: _Outcome,
        time_remaining: TimeRemaining,
        unary: bool = False,
    ) -> tuple[AsyncGenerator[router_pb2.RouteResponse, None], router_pb2.RouteResponse]:
        """Waits for the primary's first event; past the endpoint's p90 TTFT, starts a backup on
        the next candidate and returns whichever produces a first event first (the other is
        cancelled). Raises _EarlyFailure when every started attempt failed before a token."""
        delay_s = self._hedge_delay_s(model, endpoint)
        racing: dict[
            asyncio.Task[router_pb2.RouteResponse], AsyncGenerator[router_pb2.RouteResponse, None]
        ] = {asyncio.ensure_future(_first_event(primary)): primary}
        winner: AsyncGenerator[router_pb2.RouteResponse, None] | None = None
        try:
            last_failure: _EarlyFailure | None = None
            hedged = delay_s is None
            while racing:
                done, _ = await asyncio.wait(
                    racing,
                    timeout=None if hedged else delay_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    hedged = True
                    backup = self._hedge(
                        request, model, endpoint, candidates, outcome, time_remaining, unary
                    )
                    if backup is not None:
                        racing[asyncio.ensure_future(_first_event(backup))] = backup
                    continue
                for task in done:
                    stream = racing.pop(task)
                    failure = task.exception()
                    if failure is None:
                        winner = stream
                        return stream, task.result()
                    if not isinstance(failure, _EarlyFailure):
                        raise failure
                    if failure.error.code() not in RETRYABLE:
                        raise failure
                    if last_failure is not None:
                        # Only the failure raised from here is noted by route().
                        _note(outcome, last_failure)
                    last_failure = failure
            assert last_failure is not None
            raise last_failure
        finally:
            # The losers (or everything, when our caller went away): cancel their first-event
            # wait, which cancels their provider calls, then close their generators.
            for task, stream in racing.items():
                if stream is not winner:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    await stream.aclose()

    def _hedge_delay_s(self, model: Model, endpoint: Endpoint) -> float | None:
        """When to start a backup: the endpoint's p90 TTFT, once it has enough samples."""
        options = model.options
        stats = endpoint.stats
        if len(stats.ttft_window) < options.hedge_min_samples:
            return None
        p90 = stats.ttft_p(0.9) or 0.0
        return max(p90, options.hedge_min_delay_ms) / 1000

    def _hedge(
        self,
        request: router_pb2.RouteRequest,
        model: Model,
        primary: Endpoint,
        candidates: Iterator[Endpoint],
        outcome: _Outcome,
        time_remaining: TimeRemaining,
        unary: bool = False,
    ) -> AsyncGenerator[router_pb2.RouteResponse, None] | None:
        """Starts the backup attempt of a hedge, if the attempt limit and budget allow."""
        if outcome.attempts >= model.options.max_attempts:
            return None
        backup = self._next(candidates, outcome, pinned=False)
        if backup is None:
            return None
        if not model.budget.try_spend():
            backup.breaker.release()
            return None
        timeout = time_remaining()
        if timeout is not None and timeout <= 0:
            backup.breaker.release()
            return None
        outcome.attempts += 1
        backup.hedges_total += 1
        log.info(
            "hedging: no first token yet, starting a backup",
            extra={"endpoint": primary.id, "backup": backup.id},
        )
        return self._attempt(request, backup, outcome.attempts, timeout, hedged=True, unary=unary)

    # One attempt.

    async def _attempt(
        self,
        request: router_pb2.RouteRequest,
        endpoint: Endpoint,
        attempt: int,
        timeout: float | None,  # noqa: ASYNC109 - handed to gRPC as the call's deadline
        *,
        hedged: bool,
        unary: bool = False,
    ) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Relays one provider call, keeping the endpoint's counters, EWMAs and breaker.

        Raises _EarlyFailure when it failed before its first event (the caller decides whether
        another endpoint gets a go); a later failure is final and raised as a ServiceError.
        """
        generate = _generate_request(request, endpoint)
        call: GenerateCall | GenerateUnaryCall
        events: AsyncIterator[provider_pb2.GenerateResponse]
        if unary:
            call = endpoint.worker.stub.GenerateUnary(
                provider_pb2.GenerateUnaryRequest(request=generate), timeout=timeout
            )
            events = _whole_reply(call)
        else:
            call = endpoint.worker.stub.Generate(generate, timeout=timeout)
            events = aiter(call)
        endpoint.requests_total += 1
        endpoint.in_flight += 1
        clock = self._clock
        started_at = clock()
        first_at = 0.0
        tokens = 0
        started = completed = verdict = False
        # Choice 0's finish reason, for the completion when the provider sends it apart.
        finish = chat_pb2.FINISH_REASON_UNSPECIFIED
        # The upstream's model name from events held back before the first output.
        early_model = ""
        try:
            async for event in events:
                if not started and not _is_output(event):
                    # Nothing for the client yet (e.g. only the model name): the attempt is not
                    # committed, so a failure now may still move to another endpoint.
                    early_model = early_model or event.model
                    continue
                response = _route_event(event)
                if event.finish_reason and event.index == 0:
                    finish = event.finish_reason
                if not started:
                    # The first output (content, reasoning, a tool call, or the end): from here
                    # on there is no retry, and reasoning counts as the first token.
                    started = verdict = True
                    first_at = clock()
                    if not unary:
                        # A whole reply's time is not a time to first token: only streams
                        # feed the TTFT statistics the policies and hedging read.
                        endpoint.stats.record_ttft((first_at - started_at) * 1000)
                    endpoint.breaker.record_success()
                    selection = _selection(endpoint, event, attempt, hedged)
                    if early_model and not event.model:
                        selection.served_model = early_model
                    response.selection.CopyFrom(selection)
                if event.delta or event.reasoning or event.tool_calls:
                    tokens += 1
                # The last event carries usage (choices end earlier with their finish reason);
                # a stream that ends without it gets its completion below.
                if event.HasField("usage"):
                    completed = True
                    response.completion.CopyFrom(_completion(endpoint, event, finish))
                yield response
            if not completed:
                # The provider ended cleanly without a final event; the caller still gets
                # exactly one selection and one completion.
                response = router_pb2.RouteResponse()
                if not started:
                    verdict = True
                    endpoint.breaker.record_success()
                    selection = _selection(endpoint, None, attempt, hedged)
                    selection.served_model = early_model or selection.served_model
                    response.selection.CopyFrom(selection)
                response.completion.CopyFrom(_completion(endpoint, None, finish))
                yield response
            if tokens > 1:
                endpoint.stats.record_tpot((clock() - first_at) * 1000 / (tokens - 1))
        except grpc.aio.AioRpcError as error:
            endpoint.failures_total += 1
            code = error.code()
            if code in COUNTS_AGAINST_ENDPOINT:
                verdict = True
                endpoint.breaker.record_failure()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not started:
                # A timeout is a (censored) TTFT sample too, or a hanging endpoint would look
                # fast to the latency policies forever.
                endpoint.stats.record_ttft((clock() - started_at) * 1000)
            reachable = not self._health.record_failure(endpoint, error)
            hint = _retry_hint(error)
            if hint:
                endpoint.retry_after_until = max(endpoint.retry_after_until, clock() + hint)
            if not started:
                raise _EarlyFailure(error, endpoint, reachable, hint) from None
            # After the first token the client has partial output: no silent retry.
            raise from_rpc_error(error) from None
        finally:
            endpoint.in_flight -= 1
            if not verdict:
                # Cancelled (a hedge that lost, a client that left): says nothing about the
                # endpoint, but frees its half-open probe slot.
                endpoint.breaker.release()
            # No-op when the call finished; otherwise (caller cancelled, stream closed) this is
            # what cancels the provider's generation.
            call.cancel()

    # Errors.

    def _deadline(self, outcome: _Outcome) -> ServiceError:
        tried = f" (tried {'; '.join(outcome.failures)})" if outcome.failures else ""
        return ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"deadline exceeded before an endpoint answered{tried}",
            "deadline_exceeded",
        )

    def _exhausted(
        self, request: router_pb2.RouteRequest, outcome: _Outcome, why: str
    ) -> ServiceError:
        # Endpoint ids, worker addresses and upstream details are for the logs; the client
        # learns how many attempts failed and why, in general terms.
        if outcome.failures:
            log.warning(
                "no endpoint could serve the request",
                extra={"model": request.model, "failures": "; ".join(outcome.failures)},
            )
        endpoints = self._table.endpoints
        general = [f for f in outcome.failures if f.split(":", 1)[0] not in endpoints]
        counts = Counter(code.name for code in outcome.codes)
        parts = [f"{name} x{n}" if n > 1 else name for name, n in counts.items()]
        detail = why or "; ".join([*parts, *general]) or "no endpoint available"
        if outcome.codes and all(
            code == grpc.StatusCode.RESOURCE_EXHAUSTED for code in outcome.codes
        ):
            # Every candidate tried was rate limited: a 429 with Retry-After, not a 503.
            return ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"every endpoint of model {request.model!r} tried is rate limited "
                f"({outcome.attempts} attempt(s)); retry later",
                "rate_limited",
                retry_after_s=outcome.retry_after_s,
                metadata={"model": request.model},
            )
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"no endpoint of model {request.model!r} could serve the request after "
            f"{outcome.attempts} attempt(s): {detail}",
            "no_healthy_endpoint",
            retry_after_s=outcome.retry_after_s,
            metadata={"model": request.model},
        )


class _EarlyFailure(Exception):
    """A provider call failed before its first event, so another endpoint may still serve."""

    def __init__(
        self,
        error: grpc.aio.AioRpcError,
        endpoint: Endpoint,
        reachable: bool,
        retry_after_s: float | None,
    ) -> None:
        super().__init__(error.details())
        self.error = error
        self.endpoint = endpoint
        self.reachable = reachable
        self.retry_after_s = retry_after_s


def _retry_hint(error: grpc.aio.AioRpcError) -> float | None:
    """The peer's RetryInfo delay, if any; a malformed rich status is ignored, not fatal."""
    try:
        return from_rpc_error(error).retry_after_s
    except ValueError:
        return None


def _note(outcome: _Outcome, early: _EarlyFailure) -> None:
    endpoint, error = early.endpoint, early.error
    if not early.reachable:
        outcome.unreachable.add(endpoint.worker.name)
    if early.retry_after_s:
        outcome.hint(early.retry_after_s)
    outcome.failures.append(f"{endpoint.id}: {error.code().name}: {error.details()}")
    outcome.codes.append(error.code())
    log.warning(
        "attempt failed before the first token",
        extra={"endpoint": endpoint.id, "attempt": outcome.attempts, "code": error.code().name},
    )


async def _whole_reply(call: GenerateUnaryCall) -> AsyncIterator[provider_pb2.GenerateResponse]:
    """A GenerateUnary reply as the one event of a stream, so attempts handle both alike."""
    reply: provider_pb2.GenerateUnaryResponse = await call
    if not reply.choices:
        yield reply.response
        return
    # A rich reply: one event per whole choice, the last one carrying model and usage.
    events = choice_events(reply.choices)
    for number, fields in enumerate(events):
        event = provider_pb2.GenerateResponse(**fields)  # type: ignore[arg-type]
        if number == 0:
            event.model = reply.response.model
        if number == len(events) - 1:
            event.usage.CopyFrom(reply.response.usage)
        yield event


async def _first_event(
    stream: AsyncGenerator[router_pb2.RouteResponse, None],
) -> router_pb2.RouteResponse:
    # An attempt always yields at least one event (selection + completion) unless it raises.
    return await anext(stream)


def _generate_request(
    request: router_pb2.RouteRequest, endpoint: Endpoint
) -> provider_pb2.GenerateRequest:
    generate = provider_pb2.GenerateRequest(
        request_id=request.request_id, endpoint=endpoint.id, messages=request.messages
    )
    if request.HasField("sampling"):
        generate.sampling.CopyFrom(request.sampling)
    if request.HasField("options"):
        generate.options.CopyFrom(request.options)
    return generate


def _is_output(event: provider_pb2.GenerateResponse) -> bool:
    """Whether the event gives the client something: text, reasoning, a tool call, a refusal,
    or the end of a choice or of the generation."""
    return bool(
        event.delta
        or event.reasoning
        or event.finish_reason
        or event.refusal
        or event.tool_calls
        or event.HasField("usage")
    )


def _route_event(event: provider_pb2.GenerateResponse) -> router_pb2.RouteResponse:
    """The provider event's per-choice fields, relayed unchanged (text-only events, the hot
    path, copy one string)."""
    response = router_pb2.RouteResponse(delta=event.delta)
    if event.index:
        response.index = event.index
    if event.reasoning:
        response.reasoning = event.reasoning
    if event.tool_calls:
        response.tool_calls.extend(event.tool_calls)
    if event.refusal:
        response.refusal = event.refusal
    if event.HasField("logprobs"):
        response.logprobs.CopyFrom(event.logprobs)
    if event.finish_reason:
        response.finish_reason = event.finish_reason
    return response


def _selection(
    endpoint: Endpoint,
    event: provider_pb2.GenerateResponse | None,
    attempt: int,
    hedged: bool,
) -> router_pb2.Selection:
    return router_pb2.Selection(
        endpoint=endpoint.id,
        provider=endpoint.provider,
        served_model=(event.model if event is not None else "") or endpoint.model,
        attempts=attempt,
        hedged=hedged,
    )


def _completion(
    endpoint: Endpoint,
    event: provider_pb2.GenerateResponse | None,
    finish: chat_pb2.FinishReason.ValueType,
) -> router_pb2.Completion:
    completion = router_pb2.Completion(finish_reason=finish)
    if event is not None:
        completion.usage.CopyFrom(event.usage)
    completion.cost_usd = endpoint.cost_usd(completion.usage)
    return completion
