"""Calling a gRPC servicer in this process as if over the wire, for hosted services.

A hosted service (provider workers hosted in the router, the router hosted in the gateway) keeps
its servicer and its contract; only the transport goes: the caller's stub — made from the
service's descriptor, one method per RPC, like a generated stub — invokes the servicer's method
directly, which takes one Python gRPC hop — serialisation, HTTP/2 framing, event-loop
wake-ups on both sides — off every request. The calls keep the wire's behaviour, so callers
cannot tell the difference: an aborted call raises ``grpc.aio.AioRpcError`` with the same rich
status (reason, retry hint in grpc-status-details-bin), the deadline is enforced and reported as
DEADLINE_EXCEEDED, the servicer sees the remaining time, and ``cancel()`` stops the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, ClassVar, Generic, NoReturn, TypeVar, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class _Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class LocalServicerContext:
    """The part of grpc.aio.ServicerContext the mesh's servicers use, for one call."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise _Aborted(status)


def _rpc_error(code: grpc.StatusCode, details: str, trailing: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


@contextlib.contextmanager
def _as_rpc_errors() -> Iterator[None]:
    """An abort becomes the AioRpcError a remote caller would get; a timeout, DEADLINE_EXCEEDED."""
    try:
        yield
    except _Aborted as aborted:
        status = aborted.status
        raise _rpc_error(status.code, status.details, status.trailing_metadata) from None
    except TimeoutError:
        raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _context(deadline: float | None) -> grpc.aio.ServicerContext:
    return cast(grpc.aio.ServicerContext, LocalServicerContext(deadline))


UnaryMethod = Callable[[Request, grpc.aio.ServicerContext], Awaitable[Reply]]
StreamMethod = Callable[[Request, grpc.aio.ServicerContext], AsyncIterator[Reply]]


class UnaryCall(Generic[Reply]):
    """An awaitable, cancellable unary call, like grpc.aio.UnaryUnaryCall. It starts at once,
    as a gRPC call does, and runs as its own task so that ``cancel()`` reaches the servicer."""

    def __init__(self, reply: Awaitable[Reply], deadline: float | None) -> None:
        self._task = asyncio.ensure_future(self._run(reply, deadline))

    @staticmethod
    async def _run(reply: Awaitable[Reply], deadline: float | None) -> Reply:
        with _as_rpc_errors():
            async with asyncio.timeout_at(deadline):
                return await reply

    def __await__(self) -> Generator[Any, None, Reply]:
        return self._task.__await__()

    def cancel(self) -> bool:
        return self._task.cancel()


class StreamCall(Generic[Reply]):
    """An async-iterable, cancellable server stream, like grpc.aio.UnaryStreamCall."""

    # Close tasks in flight: the event loop keeps only weak references to tasks.
    _closing: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, events: AsyncIterator[Reply], deadline: float | None) -> None:
        # Servicer streaming methods are async generators (typed as the iterators gRPC expects).
        self._events = cast(types.AsyncGeneratorType[Reply, None], events)
        self._deadline = deadline
        self._relaying: types.AsyncGeneratorType[Reply, None] | None = None

    def __aiter__(self) -> AsyncIterator[Reply]:
        self._relaying = cast(types.AsyncGeneratorType[Reply, None], self._relay())
        return self._relaying

    async def _relay(self) -> AsyncIterator[Reply]:
        with _as_rpc_errors():
            async with asyncio.timeout_at(self._deadline), contextlib.aclosing(self._events):
                async for event in self._events:
                    yield event

    def cancel(self) -> bool:
        """Stops the servicer's stream now, as cancelling a gRPC call does. A caller that stops
        reading (a hedge that lost, a client that left) may leave the stream suspended at an
        event, where nothing else would close it before garbage collection."""
        relaying = self._relaying or self._events
        if relaying.ag_running or relaying.ag_frame is None:
            return False  # running (its task is being cancelled) or finished
        task = asyncio.ensure_future(relaying.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True


def unary_call(
    method: UnaryMethod[Request, Reply],
    request: Request,
    timeout: float | None = None,
) -> UnaryCall[Reply]:
    deadline = _deadline(timeout)
    return UnaryCall(method(request, _context(deadline)), deadline)


def stream_call(
    method: StreamMethod[Request, Reply],
    request: Request,
    timeout: float | None = None,
) -> StreamCall[Reply]:
    deadline = _deadline(timeout)
    return StreamCall(method(request, _context(deadline)), deadline)


Servicer = TypeVar("Servicer")


class InProcessStub(Generic[Servicer]):
    """A stub for every RPC of a service descriptor, each calling the servicer's method of the
    same name in this process. Like a generated stub, its methods take the request and the
    keyword arguments ``timeout`` and ``metadata``; metadata is dropped (what the mesh's
    servicers need travels in the request). The RPCs come from the descriptor, so a new RPC
    needs no change here, and a servicer that lacks one fails when the stub is made."""

    def __init__(self, servicer: Servicer, service: ServiceDescriptor) -> None:
        self.servicer = servicer
        self.service = service
        for method in service.methods:
            setattr(self, method.name, _bound_call(servicer, method))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Only reached for names that are not RPCs of the service (the RPCs are set in
        # __init__); declared so that type checkers accept stub.SomeRpc(...).
        raise AttributeError(f"{self.service.full_name} has no RPC {name!r}")


def _bound_call(servicer: object, method: MethodDescriptor) -> Callable[..., Any]:
    if method.client_streaming:
        raise TypeError(f"{method.full_name}: client-streaming RPCs cannot be called in-process")
    implementation = getattr(servicer, method.name, None)
    if implementation is None:
        raise TypeError(f"{type(servicer).__name__} does not implement {method.full_name}")
    call: Callable[..., Any] = stream_call if method.server_streaming else unary_call

    def invoke(request: Any, *, timeout: float | None = None, metadata: object = None) -> Any:
        return call(implementation, request, timeout)

    invoke.__name__ = method.name
    return invoke
