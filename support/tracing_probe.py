"""Facts about tracing, gathered in a fresh interpreter (tracing setup is process-global).

``python -m support.tracing_probe NAME`` runs one probe and prints what it saw as JSON; the
assertions are in tests/unit/test_metrics_tracing.py, which runs it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from hybridinference.common import trace_context
from hybridinference.common.telemetry_settings import TracingSettings
from hybridinference.common.tracing import setup_tracing

# Nothing listens here: exports fail fast and are never waited for.
ABSENT_COLLECTOR = "http://127.0.0.1:9"


def tracing_off() -> dict[str, Any]:
    from hybridinference.gateway import shipper  # noqa: F401  (imported for the check)
    from hybridinference.logger import servicer  # noqa: F401

    tracing = setup_tracing(TracingSettings(), "gateway")
    link = ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", "request-id")
    with trace_context.linked_span("store request records", [link]):
        pass
    return {
        "tracing": tracing is not None,
        "enabled": trace_context.enabled(),
        "traceparent": trace_context.current_traceparent(),
        "opentelemetry_modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    }


def tracing_on() -> dict[str, Any]:
    from opentelemetry import trace

    tracing = setup_tracing(TracingSettings(enabled=True, otlp_endpoint=ABSENT_COLLECTOR), "router")
    assert tracing is not None  # for the type checker; the test reads "interceptors"
    resource = trace.get_tracer_provider().resource  # type: ignore[attr-defined]
    facts = {
        "interceptors": len(tracing.server_interceptors),
        "service_name": resource.attributes["service.name"],
    }
    asyncio.run(tracing.shutdown())
    return facts


def links() -> dict[str, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    setup_tracing(TracingSettings(enabled=True, otlp_endpoint=ABSENT_COLLECTOR), "logger")
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    outside_any_span = trace_context.current_traceparent()
    with trace.get_tracer("t").start_as_current_span("request") as request:
        traceparent = trace_context.current_traceparent()
    ctx = request.get_span_context()
    pairs = [(traceparent, "req-1"), ("not a traceparent", "req-2")]
    with trace_context.linked_span("store request records", pairs):
        pass
    stored = [s for s in exporter.get_finished_spans() if s.name == "store request records"]
    return {
        "outside_any_span": outside_any_span,
        "traceparent": traceparent,
        "request": {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"},
        "stored": [
            {
                "trace_id": f"{s.context.trace_id:032x}",
                "has_parent": s.parent is not None,
                "links": [
                    {"span_id": f"{link.context.span_id:016x}", "attributes": dict(link.attributes)}
                    for link in s.links
                ],
                "attributes": dict(s.attributes or {}),
            }
            for s in stored
            if s.context is not None
        ],
    }


PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "off": tracing_off,
    "on": tracing_on,
    "links": links,
}

if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(PROBES[sys.argv[1]]()))
    sys.stdout.flush()
    # Skips the exit-time export to the absent collector (it retries for seconds).
    os._exit(0)
