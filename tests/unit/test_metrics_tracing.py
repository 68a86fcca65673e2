"""Tracing off costs nothing: OpenTelemetry is not even imported; on, it yields interceptors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson

from support.procs import REPO


def probe(name: str) -> Any:
    """Runs support/tracing_probe.py's probe in a fresh interpreter and returns its facts."""
    result = subprocess.run(
        [sys.executable, "-m", "support.tracing_probe", name],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)


def test_tracing_off_imports_no_opentelemetry() -> None:
    facts = probe("off")
    assert facts["tracing"] is False and facts["enabled"] is False
    assert facts["traceparent"] == ""
    assert facts["opentelemetry_modules"] == []


def test_tracing_on_sets_the_service_name_and_a_server_interceptor() -> None:
    facts = probe("on")
    assert facts["interceptors"] == 1
    assert facts["service_name"] == "hybridinference-router"


def test_tracing_on_stamps_traceparents_and_links_batch_spans_to_them() -> None:
    facts = probe("links")
    assert facts["outside_any_span"] == ""  # no active span: nothing to link to
    traceparent, request = facts["traceparent"], facts["request"]
    # W3C version 00, the span's ids, and the sampled bit among the flags.
    assert traceparent[:-2] == f"00-{request['trace_id']}-{request['span_id']}-", traceparent
    assert int(traceparent[-2:], 16) & 1
    (stored,) = facts["stored"]
    # Its own trace, linked (not parented) to the request; the malformed context is skipped.
    assert stored["trace_id"] != request["trace_id"] and not stored["has_parent"]
    assert stored["links"] == [
        {"span_id": request["span_id"], "attributes": {"request_id": "req-1"}}
    ]
    assert stored["attributes"]["records"] == 2 and stored["attributes"]["linked"] == 1
