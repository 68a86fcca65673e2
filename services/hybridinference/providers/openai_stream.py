"""Reads one OpenAI-format SSE stream (bytes) into provider events: the one reader behind the
openai (SDK), openai_compatible and vllm (raw HTTP) adapters.

Each adapter opens the request its own way and hands over a ``read`` that returns the next
network read (``b""`` at the end) and the exception types its transport raises for the idle
timeout; parsing, the first-output deadline, ``[DONE]``, error events inside a 200 stream, a
connection lost mid-stream and "ended before it finished" are decided here once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import orjson

from hybridinference.common.errors import ServiceError
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers import upstream_errors as ue
from hybridinference.providers.deadline import FirstOutputDeadline
from hybridinference.providers.openai_wire import MalformedChunk, StreamAssembler, merge_events
from hybridinference.providers.sse import SseParser

_DONE = b"[DONE]"

Read = Callable[[], Awaitable[bytes]]
Redact = Callable[[str], str]


def reader(chunks: AsyncIterator[bytes] | AsyncIterator[str]) -> Read:
    """A ``read`` over an iterator of body pieces (an SDK's byte stream, vLLM's SSE strings)."""

    async def read() -> bytes:
        try:
            piece = await chunks.__anext__()
        except StopAsyncIteration:
            return b""
        return piece.encode() if isinstance(piece, str) else bytes(piece)

    return read


def stream_error(endpoint: str, error: object, redact: Redact) -> ServiceError:
    """An error event inside a 200 stream (vLLM and others send these mid-stream)."""
    status = 500
    message = str(error)
    name = param = None
    if isinstance(error, dict):
        message = str(error.get("message", error))
        code = error.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            status = code
        elif isinstance(code, str):
            name = code
        if isinstance(error.get("param"), str):
            param = error["param"]
    return ue.http_error(endpoint, status, redact(message), code=name, param=param)


def disconnected(endpoint: str, detail: str, events: int) -> ServiceError:
    return ue.upstream_error(ue.DISCONNECTED, endpoint, f"{detail} (after {events} chunks)")


async def openai_events(
    read: Read,
    model: str,
    deadline: FirstOutputDeadline,
    endpoint: str,
    redact: Redact,
    idle_timeouts: tuple[type[BaseException], ...] = (),
) -> AsyncGenerator[provider_pb2.GenerateResponse, None]:
    """The events of one stream, ending with each choice's finish and the usage. A read that
    raises one of ``idle_timeouts`` is the idle timeout; any other failure a lost stream."""
    assembler = StreamAssembler(model)
    parser = SseParser()
    done = False
    while not done:
        output = bool(assembler.deltas)
        try:
            if output:
                chunk = await read()
            else:
                async with deadline.scope(False) as scope:
                    chunk = await read()
        except Exception as error:
            if not output and scope.expired():
                raise deadline.error(False) from None
            if isinstance(error, idle_timeouts):
                raise deadline.error(True) from None
            detail = redact(str(error) or type(error).__name__)
            raise disconnected(endpoint, detail, assembler.deltas) from None
        payloads = parser.feed(chunk) if chunk else parser.finish()
        # Output that arrived in one network read leaves as one event per choice: every hop
        # after this one pays per message, and nothing here waits for more data, so the first
        # token is never delayed. An error after some output still lets that output out first.
        events: list[provider_pb2.GenerateResponse] = []
        failure: ServiceError | None = None
        for payload in payloads:
            if payload == _DONE:
                done = True
                break
            try:
                decoded = orjson.loads(payload)
                if isinstance(decoded, dict) and "error" in decoded:
                    failure = stream_error(endpoint, decoded["error"], redact)
                    break
                assembler.chunk(decoded, events)
            except (orjson.JSONDecodeError, MalformedChunk) as error:
                failure = ue.upstream_error(
                    ue.MALFORMED, endpoint, f"malformed stream chunk: {redact(str(error))}"
                )
                break
        if len(events) == 1:
            yield events[0]
        elif events:
            for event in merge_events(events):
                yield event
        if failure is not None:
            raise failure
        if not chunk:
            # End of body: a finish_reason means the stream really ended, [DONE] or not.
            if not done and not assembler.finished:
                raise disconnected(endpoint, "stream ended before it finished", assembler.deltas)
            done = True
    for event in assembler.final():
        yield event
