"""Provider workers hosted inside the router process (``providers[].colocated: true``).

The router talks to every worker through the ProviderStub protocol. For a colocated worker the
stub calls the worker's own ProviderServicer (same adapters, counters and error mapping) in this
process instead of over gRPC, which takes one Python gRPC hop — and its serialisation, HTTP/2
framing and event-loop wake-ups on both sides — off every request. Errors keep the wire's shape:
an aborted call surfaces as ``grpc.aio.AioRpcError`` carrying the same rich status (reason, retry
hint) a remote worker would send, and a deadline as DEADLINE_EXCEEDED, so the relay's retry,
fallback, breaker and health logic cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import Any, ClassVar, NoReturn, TypeVar, cast

import grpc

from hybridinference.provider.v1 import provider_pb2
from services.common.settings import ProviderWorkerSettings
from services.providers.metrics import register_worker_metrics
from services.providers.server import build_servicer
from services.providers.servicer import ProviderServicer

Reply = TypeVar("Reply")
Events = types.AsyncGeneratorType[provider_pb2.GenerateResponse, None]


class _Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class _LocalContext:
    """The part of grpc.aio.ServicerContext the provider servicer uses."""

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise _Aborted(status)


def _rpc_error(code: grpc.StatusCode, details: str, trailing: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


def _from_aborted(aborted: _Aborted) -> grpc.aio.AioRpcError:
    status = aborted.status
    return _rpc_error(status.code, status.details, status.trailing_metadata)


def _deadline_exceeded() -> grpc.aio.AioRpcError:
    return _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _UnaryCall:
    """An awaitable, cancellable unary call, like grpc.aio.UnaryUnaryCall."""

    def __init__(self, reply: Awaitable[Reply], timeout: float | None) -> None:
        self._task = asyncio.ensure_future(self._run(reply, timeout))

    @staticmethod
    async def _run(reply: Awaitable[Any], timeout: float | None) -> Any:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await reply
        except _Aborted as aborted:
            raise _from_aborted(aborted) from None
        except TimeoutError:
            raise _deadline_exceeded() from None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    def cancel(self) -> bool:
        return self._task.cancel()


class _StreamCall:
    """An async-iterable, cancellable server stream, like grpc.aio.UnaryStreamCall."""

    # Close tasks in flight: the event loop keeps only weak references to tasks.
    _closing: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(
        self,
        events: Events,
        timeout: float | None,
    ) -> None:
        self._events = events
        self._deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        self._relaying: Events | None = None

    def __aiter__(self) -> AsyncIterator[provider_pb2.GenerateResponse]:
        self._relaying = cast(Events, self._relay())
        return self._relaying

    async def _relay(self) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
        try:
            async with asyncio.timeout_at(self._deadline), contextlib.aclosing(self._events):
                async for event in self._events:
                    yield event
        except _Aborted as aborted:
            raise _from_aborted(aborted) from None
        except TimeoutError:
            raise _deadline_exceeded() from None

    def cancel(self) -> bool:
        """Stops the generation now, as cancelling a gRPC call does: the relay calls this when
        it stops reading (a hedge that lost, a client that left) and may leave the stream
        suspended at an event, where nothing else would close it before garbage collection."""
        relaying = self._relaying or self._events
        if relaying.ag_running or relaying.ag_frame is None:
            return False  # still running (its task is being cancelled) or already finished
        task = asyncio.ensure_future(relaying.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True


class ColocatedStub:
    """A ProviderStub (services.router.endpoints) backed by a servicer in this process."""

    def __init__(self, servicer: ProviderServicer) -> None:
        self.servicer = servicer
        self._context = cast(grpc.aio.ServicerContext, _LocalContext())

    def Generate(
        self,
        request: provider_pb2.GenerateRequest,
        *,
        timeout: float | None = None,
    ) -> _StreamCall:
        events = cast(Events, self.servicer.Generate(request, self._context))
        return _StreamCall(events, timeout)

    def GenerateUnary(
        self,
        request: provider_pb2.GenerateUnaryRequest,
        *,
        timeout: float | None = None,
    ) -> _UnaryCall:
        return _UnaryCall(self.servicer.GenerateUnary(request, self._context), timeout)

    def GetStatus(
        self,
        request: provider_pb2.GetStatusRequest,
        *,
        timeout: float | None = None,
    ) -> _UnaryCall:
        return _UnaryCall(self.servicer.GetStatus(request, self._context), timeout)


class ColocatedChannel:
    """Stands in for a worker's grpc channel: always READY; closing closes the adapters."""

    def __init__(self, settings: ProviderWorkerSettings, servicer: ProviderServicer) -> None:
        self.settings = settings
        self._servicer = servicer

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def close(self, grace: float | None = None) -> None:
        await self._servicer.close()


Colocate = Callable[[ProviderWorkerSettings], tuple[ColocatedChannel, ColocatedStub]]


def colocate_worker(settings: ProviderWorkerSettings) -> tuple[ColocatedChannel, ColocatedStub]:
    """Builds the worker's adapters in this process; its metrics join the router's /metrics."""
    servicer = build_servicer(settings)
    register_worker_metrics(settings.name, servicer)
    return ColocatedChannel(settings, servicer), ColocatedStub(servicer)
