"""ProviderService: relays generations from the adapters of one worker and reports their status."""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import cast

import grpc

from hybridinference.common.chat_events import ChoiceAccumulator
from hybridinference.common.errors import ServiceError, abort
from hybridinference.common.logs import bind_request_id
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.providers.adapter import ProviderAdapter
from hybridinference.providers.counters import EndpointCounters

log = logging.getLogger(__name__)


class _Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    # The default: any exit that is neither (CancelledError from a client that went away or a
    # deadline, GeneratorExit when gRPC drops the stream while it was sending) is a cancellation.
    CANCELLED = "cancelled"


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, adapters: Mapping[str, ProviderAdapter]) -> None:
        self._adapters = dict(adapters)
        self._counters = {endpoint: EndpointCounters() for endpoint in self._adapters}

    @property
    def adapters(self) -> Mapping[str, ProviderAdapter]:
        return self._adapters

    @property
    def counters(self) -> Mapping[str, EndpointCounters]:
        return self._counters

    def _adapter(self, endpoint: str) -> ProviderAdapter:
        adapter = self._adapters.get(endpoint)
        if adapter is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"endpoint {endpoint!r} is not hosted by this worker; "
                f"hosted: {', '.join(sorted(self._adapters))}",
                reason="endpoint_not_found",
                metadata={"endpoint": endpoint},
            )
        return adapter

    async def Generate(
        self, request: provider_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[provider_pb2.GenerateResponse]:
        bind_request_id(request.request_id)
        try:
            adapter = self._adapter(request.endpoint)
        except ServiceError as error:
            await abort(context, error)
        counters = self._counters[request.endpoint]
        counters.running += 1
        outcome = _Outcome.CANCELLED
        streamed = 0
        stream = adapter.generate(request)
        try:
            async for event in stream:
                yield event
                streamed += 1
            outcome = _Outcome.COMPLETED
        except ServiceError as error:
            outcome = _Outcome.FAILED
            log.warning(
                "generation failed",
                extra={
                    "endpoint": request.endpoint,
                    "code": error.code.name,
                    "reason": error.reason,
                    "events": streamed,
                },
            )
            await abort(context, error)
        except Exception:
            outcome = _Outcome.FAILED
            log.exception("generation crashed", extra={"endpoint": request.endpoint})
            await abort(
                context,
                ServiceError(grpc.StatusCode.INTERNAL, "provider adapter error", "provider_error"),
            )
        finally:
            counters.running -= 1
            if outcome is _Outcome.COMPLETED:
                counters.completed_total += 1
            elif outcome is _Outcome.FAILED:
                counters.failed_total += 1
            else:
                counters.cancelled_total += 1
                # Closing may run in another task (GeneratorExit path), so bind the id again.
                bind_request_id(request.request_id)
                log.info(
                    "generation cancelled",
                    extra={"endpoint": request.endpoint, "events": streamed},
                )
            # Stops an adapter left suspended at a yield (no-op when it already finished), so the
            # upstream request ends now rather than when the generator is garbage-collected.
            await stream.aclose()

    async def GenerateUnary(
        self, request: provider_pb2.GenerateUnaryRequest, context: grpc.aio.ServicerContext
    ) -> provider_pb2.GenerateUnaryResponse:
        """Generate's events merged into one reply: same adapter, counters and errors, but one
        unary round trip instead of a server stream (the router uses it for whole replies)."""
        reply = provider_pb2.GenerateResponse()
        merged = ChoiceAccumulator()
        # Generate is an async generator (typed as the iterator gRPC expects): close it here so
        # a cancelled call stops the adapter at once.
        generation = cast(
            AsyncGenerator[provider_pb2.GenerateResponse, None],
            self.Generate(request.request, context),
        )
        async with contextlib.aclosing(generation) as events:
            async for event in events:
                merged.add(event)
                if event.model and not reply.model:
                    reply.model = event.model
                if event.HasField("usage"):
                    reply.usage.CopyFrom(event.usage)
        reply.delta = merged.text()
        reply.finish_reason = merged.finish_reason()
        if merged.plain:
            return provider_pb2.GenerateUnaryResponse(response=reply)
        return provider_pb2.GenerateUnaryResponse(response=reply, choices=merged.choices())

    async def GetStatus(
        self, request: provider_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> provider_pb2.GetStatusResponse:
        try:
            endpoints = [request.endpoint] if request.endpoint else list(self._adapters)
            adapters = [self._adapter(endpoint) for endpoint in endpoints]
        except ServiceError as error:
            await abort(context, error)
        statuses = [
            self._counters[endpoint].fill(await self._status(endpoint, adapter))
            for endpoint, adapter in zip(endpoints, adapters, strict=True)
        ]
        return provider_pb2.GetStatusResponse(endpoints=statuses)

    @staticmethod
    async def _status(endpoint: str, adapter: ProviderAdapter) -> provider_pb2.EndpointStatus:
        # One broken adapter must not hide the status of the others.
        try:
            return await adapter.status()
        except Exception as error:
            log.exception("status failed", extra={"endpoint": endpoint})
            return provider_pb2.EndpointStatus(
                endpoint=endpoint,
                provider=adapter.kind,
                model=adapter.model,
                healthy=False,
                detail=f"status failed: {error}",
            )

    async def close(self) -> None:
        for adapter in self._adapters.values():
            try:
                await adapter.close()
            except Exception:
                log.exception("closing adapter failed", extra={"endpoint": adapter.endpoint_id})
