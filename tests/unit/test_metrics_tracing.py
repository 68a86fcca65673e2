"""Tracing off costs nothing: OpenTelemetry is not even imported; on, it yields interceptors."""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import REPO

OFF = """
import sys
from services.common import server
from services.common.telemetry_settings import TracingSettings
from services.common.tracing import setup_tracing
assert setup_tracing(TracingSettings(), "gateway") is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""

ON = """
import asyncio
from services.common.telemetry_settings import TracingSettings
from services.common.tracing import setup_tracing
tracing = setup_tracing(TracingSettings(enabled=True, otlp_endpoint="http://127.0.0.1:9"), "router")
assert tracing is not None and len(tracing.server_interceptors) == 1
from opentelemetry import trace
assert trace.get_tracer_provider().resource.attributes["service.name"] == "hybridinference-router"
asyncio.run(tracing.shutdown())
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
