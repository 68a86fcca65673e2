"""OpenTelemetry implementation of hybridinference.common.trace_context's hooks (tracing on only).

Imported by ``setup_tracing`` alone, so a process with tracing off never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import trace
from opentelemetry.trace import Link
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_TRACEPARENT = "traceparent"


class OtelTraceHooks:
    def __init__(self, tracer_name: str) -> None:
        self._propagator = TraceContextTextMapPropagator()
        self._tracer = trace.get_tracer(tracer_name)

    def current_traceparent(self) -> str:
        carrier: dict[str, str] = {}
        # Injects nothing when no valid span is active (a record built outside a request).
        self._propagator.inject(carrier)
        return carrier.get(_TRACEPARENT, "")

    def link(self, traceparent: str, request_id: str) -> Link | None:
        context = self._propagator.extract({_TRACEPARENT: traceparent})
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return None
        return Link(span_context, {"request_id": request_id})

    def linked_span(
        self, name: str, links: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[None]:
        return self._span(name, links)

    @contextmanager
    def _span(self, name: str, links: Sequence[tuple[str, str]]) -> Iterator[None]:
        resolved = [link for tp, rid in links if (link := self.link(tp, rid)) is not None]
        with self._tracer.start_as_current_span(
            name, links=resolved, attributes={"records": len(links), "linked": len(resolved)}
        ):
            yield
