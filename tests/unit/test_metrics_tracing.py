"""Tracing off costs nothing: OpenTelemetry is not even imported; on, it yields interceptors."""

from __future__ import annotations

import subprocess
import sys

from support.procs import REPO

OFF = """
import sys
from hybridinference.common import server
from hybridinference.common.telemetry_settings import TracingSettings
from hybridinference.common.tracing import setup_tracing
from hybridinference.common import trace_context
from hybridinference.gateway import shipper
from hybridinference.logger import servicer
assert setup_tracing(TracingSettings(), "gateway") is None
assert not trace_context.enabled() and trace_context.current_traceparent() == ""
link = ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", "request-id")
with trace_context.linked_span("store request records", [link]):
    pass
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""

ON = """
import asyncio
from hybridinference.common.telemetry_settings import TracingSettings
from hybridinference.common.tracing import setup_tracing
tracing = setup_tracing(TracingSettings(enabled=True, otlp_endpoint="http://127.0.0.1:9"), "router")
assert tracing is not None and len(tracing.server_interceptors) == 1
from opentelemetry import trace
assert trace.get_tracer_provider().resource.attributes["service.name"] == "hybridinference-router"
asyncio.run(tracing.shutdown())
"""

LINKS = """
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from hybridinference.common import trace_context
from hybridinference.common.telemetry_settings import TracingSettings
from hybridinference.common.tracing import setup_tracing
tracing = setup_tracing(TracingSettings(enabled=True, otlp_endpoint="http://127.0.0.1:9"), "logger")
exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
assert trace_context.current_traceparent() == ""  # no active span: nothing to link to
with trace.get_tracer("t").start_as_current_span("request") as request:
    traceparent = trace_context.current_traceparent()
ctx = request.get_span_context()
# W3C version 00, the span's ids, and the sampled bit among the flags.
assert traceparent[:-2] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-", traceparent
assert int(traceparent[-2:], 16) & 1
links = [(traceparent, "req-1"), ("not a traceparent", "req-2")]
with trace_context.linked_span("store request records", links):
    pass
(stored,) = [s for s in exporter.get_finished_spans() if s.name == "store request records"]
# Its own trace, linked (not parented) to the request; the malformed context is skipped.
assert stored.context.trace_id != ctx.trace_id and stored.parent is None
assert [(l.context.span_id, dict(l.attributes)) for l in stored.links] == [
    (ctx.span_id, {"request_id": "req-1"})
]
assert stored.attributes["records"] == 2 and stored.attributes["linked"] == 1
import os
os._exit(0)  # skips the exit-time export to the absent collector (retries for seconds)
"""


def _python(code: str) -> None:
    # A fresh interpreter: tracing setup is process-global (tracer provider, patched channels).
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_tracing_off_imports_no_opentelemetry() -> None:
    _python(OFF)


def test_tracing_on_sets_the_service_name_and_a_server_interceptor() -> None:
    _python(ON)


def test_tracing_on_stamps_traceparents_and_links_batch_spans_to_them() -> None:
    _python(LINKS)
