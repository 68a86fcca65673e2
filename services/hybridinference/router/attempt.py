"""One attempt: one provider call on one endpoint, with the endpoint's bookkeeping.

An attempt keeps the endpoint's counters, TTFT / time-per-token statistics and circuit breaker,
and turns a failure before the first event into ``EarlyFailure`` (another endpoint may still
serve). Two kinds share that bookkeeping:

- ``StreamAttempt`` relays a Generate stream; its first event is the selection, the rest follow.
- ``UnaryAttempt`` asks GenerateUnary for the whole reply and builds the RouteUnaryResponse from
  it once: there is no stream to rebuild and merge again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.breaker import counts_against_endpoint
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.request_state import RequestState
from hybridinference.router.v1 import router_pb2

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

T_co = TypeVar("T_co", covariant=True)


class EarlyFailure(Exception):
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

    @property
    def retryable(self) -> bool:
        return self.error.code() in RETRYABLE

    def note(self, state: RequestState) -> None:
        state.note_failure(self.endpoint, self.error, self.reachable, self.retry_after_s)


@dataclass(frozen=True)
class Launch:
    """How an attempt is started: the provider call's deadline (seconds, None for none) and
    whether it is a hedge's backup."""

    timeout: float | None
    hedged: bool = False


class Attempt(Protocol[T_co]):
    """What planning and hedging need of an attempt: its endpoint, its first result (raising
    EarlyFailure), and a way to end it (which cancels the provider call)."""

    endpoint: Endpoint

    async def first(self) -> T_co: ...

    async def close(self) -> None: ...


class _Bookkeeping:
    """The endpoint's side of one provider call: counters on start, breaker and statistics on
    the outcome, a half-open probe slot freed when the call says nothing about the endpoint."""

    def __init__(self, state: RequestState, endpoint: Endpoint, launch: Launch) -> None:
        self.state = state
        self.endpoint = endpoint
        self.hedged = launch.hedged
        state.attempts += 1
        self.number = state.attempts
        self.timeout = launch.timeout
        self.started_at = 0.0
        self.verdict = False
        # Whether the request found a free slot: only those measure unqueued service.
        self.unqueued = False

    def start(self) -> None:
        endpoint = self.endpoint
        capacity = endpoint.capacity
        self.unqueued = capacity is None or endpoint.load() < capacity
        endpoint.requests_total += 1
        endpoint.in_flight += 1
        self.started_at = self.state.clock()

    def first_token(self, now: float) -> None:
        """Records the time to first token (a stream's; a whole reply's is no TTFT)."""
        ttft_ms = (now - self.started_at) * 1000
        stats = self.endpoint.stats
        stats.record_ttft(ttft_ms)
        if self.unqueued:
            stats.record_unqueued(ttft_ms, None, now)

    def done(self) -> None:
        """The call ended well: it held its slot from start until now."""
        if self.unqueued:
            now = self.state.clock()
            self.endpoint.stats.record_unqueued(None, (now - self.started_at) * 1000, now)

    def succeeded(self) -> None:
        self.verdict = True
        self.endpoint.breaker.record_success()

    def failed(self, error: grpc.aio.AioRpcError, started: bool) -> EarlyFailure | None:
        """Books a failed call; the EarlyFailure to raise when it failed before its first event."""
        endpoint = self.endpoint
        clock = self.state.clock
        code = error.code()
        blamed = counts_against_endpoint(error, caller_deadline=self.timeout is not None)
        if blamed or code != grpc.StatusCode.DEADLINE_EXCEEDED:
            # Not counted: the caller's own deadline running out (see counts_against_endpoint);
            # without a verdict finished() frees a half-open probe slot, as for a cancel.
            endpoint.failures_total += 1
        if blamed:
            self.verdict = True
            endpoint.breaker.record_failure()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not started:
                # A timeout is a (censored) TTFT sample too, or a hanging endpoint would look
                # fast to the latency policies forever.
                self.first_token(clock())
        reachable = not self.state.health.record_failure(endpoint, error)
        hint = _retry_hint(error)
        if hint:
            endpoint.retry_after_until = max(endpoint.retry_after_until, clock() + hint)
        if started:
            return None
        return EarlyFailure(error, endpoint, reachable, hint)

    def finished(self) -> None:
        self.endpoint.in_flight -= 1
        if not self.verdict:
            # Cancelled (a hedge that lost, a client that left): says nothing about the
            # endpoint, but frees its half-open probe slot.
            self.endpoint.breaker.release()
        # A slot is free: requests waiting for admission may find room now.
        self.state.on_release()

    def selection(self, served_model: str) -> router_pb2.Selection:
        return router_pb2.Selection(
            endpoint=self.endpoint.id,
            provider=self.endpoint.provider,
            served_model=served_model or self.endpoint.model,
            attempts=self.number,
            hedged=self.hedged,
            queued_ms=max(0.0, (self.started_at - self.state.received_at) * 1000),
        )


class StreamAttempt:
    """One streaming Generate call, relayed as RouteResponses."""

    def __init__(self, state: RequestState, endpoint: Endpoint, launch: Launch) -> None:
        self.endpoint = endpoint
        self._book = _Bookkeeping(state, endpoint, launch)
        # Not started until first(): an attempt that is never awaited makes no call.
        self._events = self._relay()

    async def first(self) -> router_pb2.RouteResponse:
        # The stream always yields at least one event (selection + completion) unless it raises.
        return await anext(self._events)

    def rest(self) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """The events after the first (call after first() returned)."""
        return self._events

    async def close(self) -> None:
        await self._events.aclose()

    async def _relay(self) -> AsyncGenerator[router_pb2.RouteResponse, None]:
        """Raises EarlyFailure when the call failed before its first event; a later failure is
        final (the client already has tokens) and raised as a ServiceError."""
        book = self._book
        endpoint = self.endpoint
        state = book.state
        clock = state.clock
        call = endpoint.worker.stub.Generate(
            generate_request(state.request, endpoint), timeout=book.timeout
        )
        book.start()
        first_at = 0.0
        tokens = 0
        started = completed = False
        # Choice 0's finish reason, for the completion when the provider sends it apart.
        finish = chat_pb2.FINISH_REASON_UNSPECIFIED
        # The upstream's model name from events held back before the first output.
        early_model = ""
        try:
            async for event in aiter(call):
                if not started and not is_output(event):
                    # Nothing for the client yet (e.g. only the model name): the attempt is not
                    # committed, so a failure now may still move to another endpoint.
                    early_model = early_model or event.model
                    continue
                response = route_event(event)
                if event.finish_reason and event.index == 0:
                    finish = event.finish_reason
                if not started:
                    # The first output (content, reasoning, a tool call, or the end): from here
                    # on there is no retry, and reasoning counts as the first token.
                    started = True
                    first_at = clock()
                    book.first_token(first_at)
                    book.succeeded()
                    response.selection.CopyFrom(book.selection(event.model or early_model))
                if event.delta or event.reasoning or event.tool_calls:
                    tokens += 1
                # The last event carries usage (choices end earlier with their finish reason);
                # a stream that ends without it gets its completion below.
                if event.HasField("usage"):
                    completed = True
                    response.completion.CopyFrom(completion(endpoint, event, finish))
                yield response
            if not completed:
                # The provider ended cleanly without a final event; the caller still gets
                # exactly one selection and one completion.
                response = router_pb2.RouteResponse()
                if not started:
                    book.succeeded()
                    response.selection.CopyFrom(book.selection(early_model))
                response.completion.CopyFrom(completion(endpoint, None, finish))
                yield response
            if tokens > 1:
                endpoint.stats.record_tpot((clock() - first_at) * 1000 / (tokens - 1))
            book.done()
        except grpc.aio.AioRpcError as error:
            early = book.failed(error, started)
            if early is not None:
                raise early from None
            # After the first token the client has partial output: no silent retry.
            raise from_rpc_error(error) from None
        finally:
            book.finished()
            # No-op when the call finished; otherwise (caller cancelled, stream closed) this is
            # what cancels the provider's generation.
            call.cancel()


class UnaryAttempt:
    """One GenerateUnary call: the provider's whole reply, merged once into the router's."""

    def __init__(self, state: RequestState, endpoint: Endpoint, launch: Launch) -> None:
        self.endpoint = endpoint
        self._book = _Bookkeeping(state, endpoint, launch)

    async def first(self) -> router_pb2.RouteUnaryResponse:
        book = self._book
        endpoint = self.endpoint
        call = endpoint.worker.stub.GenerateUnary(
            provider_pb2.GenerateUnaryRequest(
                request=generate_request(book.state.request, endpoint)
            ),
            timeout=book.timeout,
        )
        book.start()
        try:
            reply: provider_pb2.GenerateUnaryResponse = await call
            # A whole reply's time is not a time to first token: only streams feed the TTFT
            # statistics the policies and hedging read. It does tell how long a slot is held.
            book.succeeded()
            book.done()
        except grpc.aio.AioRpcError as error:
            early = book.failed(error, started=False)
            assert early is not None
            raise early from None
        finally:
            book.finished()
            # No-op when the call finished; cancels the generation when we were cancelled.
            call.cancel()
        event = reply.response
        # Rich replies (tool calls, reasoning, several choices) come whole in `choices`; the
        # plain text of choice 0 in `response` either way.
        return router_pb2.RouteUnaryResponse(
            content=event.delta,
            choices=reply.choices,
            selection=book.selection(event.model),
            completion=completion(endpoint, event, event.finish_reason),
        )

    async def close(self) -> None:
        # Nothing to close: the call lives (and is cancelled) inside first().
        return None


def generate_request(
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


def is_output(event: provider_pb2.GenerateResponse) -> bool:
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


def route_event(event: provider_pb2.GenerateResponse) -> router_pb2.RouteResponse:
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


def completion(
    endpoint: Endpoint,
    event: provider_pb2.GenerateResponse | None,
    finish: chat_pb2.FinishReason.ValueType,
) -> router_pb2.Completion:
    result = router_pb2.Completion(finish_reason=finish)
    if event is not None:
        result.usage.CopyFrom(event.usage)
    result.cost_usd = endpoint.cost_usd(result.usage)
    return result


def _retry_hint(error: grpc.aio.AioRpcError) -> float | None:
    """The peer's RetryInfo delay, if any; a malformed rich status is ignored, not fatal."""
    try:
        return from_rpc_error(error).retry_after_s
    except ValueError:
        return None
