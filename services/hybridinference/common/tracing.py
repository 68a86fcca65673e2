"""OpenTelemetry traces for a service process, off by default and free when off.

With ``tracing.enabled`` false nothing of OpenTelemetry is even imported: no interceptor, no
patched channel, no exporter thread. When on, every gRPC server call gets a span (continuing the
caller's W3C ``traceparent``, which Envoy passes through from HTTP clients as metadata), every
channel created afterwards propagates the context to the next hop, and aiohttp requests to
upstream APIs get client spans; spans go to an OTLP/gRPC collector in batches. Health checks and
the router's status probes are left out: they run every few seconds per worker and would drown
the real traces. Request records, batched to the logger, carry their request's ``traceparent``
and the logger's storage span links to them (hybridinference/common/trace_context.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hybridinference.common import trace_context
from hybridinference.common.telemetry_settings import TracingSettings

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
STATUS_PROBE = "/hybridinference.provider.v1.ProviderService/GetStatus"
# Links per span: a stored batch links each of its records (the SDK's default is 128).
MAX_LINKS = 4096


@dataclass
class Tracing:
    """What the bootstrap installs when tracing is on."""

    server_interceptors: list[Any]
    shutdown: Callable[[], Awaitable[None]]


def setup_tracing(settings: TracingSettings, service: str) -> Tracing | None:
    """Configures the process-wide tracer provider; None (and no work at all) when off."""
    if not settings.enabled:
        return None
    # Imported here so a mesh with tracing off never loads OpenTelemetry.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        aio_server_interceptor,
    )
    from opentelemetry.instrumentation.grpc.filters import (
        any_of,
        full_method_name,
        negate,
        service_name,
    )
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from hybridinference.common.trace_links import OtelTraceHooks

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"hybridinference-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        # A logger batch span links every record of the batch (up to the shippers' batch size).
        span_limits=SpanLimits(max_links=MAX_LINKS),
    )
    insecure = not settings.otlp_endpoint.startswith("https://")
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=insecure)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    not_probe = negate(any_of(service_name(HEALTH_SERVICE), full_method_name(STATUS_PROBE)))
    # Patches grpc.aio's channel constructors: every channel the service opens from now on
    # (hybridinference/common/channels.py's insecure_channel included) carries the trace context.
    GrpcAioInstrumentorClient(filter_=not_probe).instrument()  # type: ignore[no-untyped-call]
    AioHttpClientInstrumentor().instrument()
    trace_context.install(OtelTraceHooks(f"hybridinference.{service}"))
    log.info("tracing on", extra={"otlp_endpoint": settings.otlp_endpoint})

    async def shutdown() -> None:
        # Flushes the spans still batched (the last requests before a drain).
        trace_context.install(None)
        provider.shutdown()

    server_interceptor = aio_server_interceptor(filter_=not_probe)  # type: ignore[no-untyped-call]
    return Tracing([server_interceptor], shutdown)
