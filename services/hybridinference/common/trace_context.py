"""The request's W3C trace context for work that leaves its call stack, e.g. batched records.

A request record reaches the logger in a batch sent by a background task, long after the
request's spans ended and in a trace of its own; so the gateway stamps the request's
``traceparent`` into the record, and the logger gives each stored batch a span *linked* to every
record's context (OpenTelemetry's model for batch processing: one span, many causes).

This module is the tracing-agnostic front: until ``hybridinference.common.tracing`` installs the
OpenTelemetry hooks (tracing on), ``current_traceparent`` returns "" and ``linked_span`` a
null context, at the cost of one global lookup and nothing of OpenTelemetry imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol


class TraceHooks(Protocol):
    def current_traceparent(self) -> str:
        """The ``traceparent`` of the active span; "" when there is none."""
        ...

    def linked_span(
        self, name: str, links: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[None]:
        """A span linked to each ``(traceparent, request_id)``, current while the block runs."""
        ...


_hooks: TraceHooks | None = None


def install(hooks: TraceHooks | None) -> None:
    global _hooks
    _hooks = hooks


def enabled() -> bool:
    return _hooks is not None


def current_traceparent() -> str:
    return "" if _hooks is None else _hooks.current_traceparent()


def linked_span(name: str, links: Sequence[tuple[str, str]]) -> AbstractContextManager[None]:
    if _hooks is None:
        return contextlib.nullcontext()
    return _hooks.linked_span(name, links)
