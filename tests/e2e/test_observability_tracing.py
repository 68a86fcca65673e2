"""One request through Envoy with a W3C traceparent: every service's spans land in one trace,
and the logger's span storing the request's record links to it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import pytest

from support.mesh import Mesh, mesh_config, running_mesh
from support.otlp import OtlpReceiver, ReceivedSpan, running_receiver
from support.polling import poll
from support.records import get_record


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Mesh, OtlpReceiver]]:
    tmp = tmp_path_factory.mktemp("traced")
    with running_receiver() as receiver:
        config = mesh_config(tmp)
        config["tracing"] = {"enabled": True, "otlp_endpoint": receiver.endpoint}
        # Children inherit the launcher's environment: export spans every 100 ms, not 5 s.
        previous = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        try:
            with running_mesh(tmp, config) as mesh:
                yield mesh, receiver
        finally:
            if previous is None:
                os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
            else:
                os.environ["OTEL_BSP_SCHEDULE_DELAY"] = previous


def test_http_request_with_traceparent_is_one_trace_across_services(
    traced: tuple[Mesh, OtlpReceiver],
) -> None:
    mesh, receiver = traced
    trace_id = secrets.token_hex(16)
    parent = secrets.token_hex(8)
    reply = httpx.post(
        f"{mesh.http_url}/v1/chat/completions",
        json={"model": "hi-sim", "messages": [{"role": "user", "content": "hello"}]},
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    services = {
        "envoy",
        "hybridinference-gateway",
        "hybridinference-router",
        "hybridinference-provider-sim",
    }

    def all_services() -> set[str] | None:
        seen = {span.service for span in receiver.trace(trace_id)}
        return seen if services <= seen else None

    poll(all_services, 30, f"spans of {services} in trace {trace_id}", every_s=0.1)
    spans = receiver.trace(trace_id)
    by_id = {span.span_id: span for span in spans}
    # Envoy continues the client's context...
    (envoy,) = [s for s in spans if s.service == "envoy"]
    assert envoy.parent_span_id == parent
    gateway = [
        s
        for s in spans
        if s.service == "hybridinference-gateway" and s.parent_span_id == envoy.span_id
    ]
    # ...the gateway's server span continues Envoy's...
    assert [s.name for s in gateway] == [
        "/hybridinference.openai.v1.OpenAIService/CreateChatCompletion"
    ]
    # ...and each later hop's server span descends from a span of the hop before it.
    provider = next(
        s
        for s in spans
        # Non-streamed requests go through the unary variant of Generate.
        if "ProviderService/Generate" in s.name and s.service == "hybridinference-provider-sim"
    )
    chain = []
    span: ReceivedSpan | None = provider
    while span is not None:
        chain.append(span.service)
        span = by_id.get(span.parent_span_id)
    assert chain[-2:] == ["hybridinference-gateway", "envoy"]
    assert "hybridinference-router" in chain
    # The record reaches the logger later, in a batch of its own trace; the span storing that
    # batch links to the request's gateway span (the context current when the record was made).
    request_spans = {s.span_id for s in spans}

    def linked_store_span() -> ReceivedSpan | None:
        for span in receiver.spans:
            if span.service == "hybridinference-logger" and any(
                link.trace_id == trace_id and link.span_id in request_spans for link in span.links
            ):
                return span
        return None

    store = poll(linked_store_span, 30, f"a logger span linked to trace {trace_id}", every_s=0.1)
    assert store.name == "store request records"
    assert store.trace_id != trace_id
    (link,) = [link for link in store.links if link.trace_id == trace_id]
    assert by_id[link.span_id].service == "hybridinference-gateway"
    assert dict(link.attributes)["request_id"]
    # The stored record keeps its trace id (the console's request page shows it) and how long
    # the request waited at the router before the attempt that served it.
    stored = poll(lambda: get_record(mesh, reply.headers["x-request-id"]), 30, "the stored record")
    assert stored.traceparent.split("-")[1] == trace_id
    assert 0 <= stored.queue_ms < stored.latency_ms
    # Health checks and status probes are not traced.
    assert not [s for s in receiver.spans if "grpc.health" in s.name or "GetStatus" in s.name]


def test_requests_without_traceparent_start_their_own_trace(
    traced: tuple[Mesh, OtlpReceiver],
) -> None:
    mesh, receiver = traced
    before = {s.trace_id for s in receiver.spans}
    reply = httpx.post(
        f"{mesh.http_url}/v1/chat/completions",
        json={"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert reply.status_code == 200

    def new_trace() -> set[str] | None:
        fresh = {
            s.trace_id
            for s in receiver.spans
            if s.trace_id not in before
            and s.service == "hybridinference-provider-sim"
            and "ProviderService/Generate" in s.name
        }
        return fresh or None

    (trace_id,) = poll(new_trace, 30, "a new trace reaching the provider", every_s=0.1)
    assert {s.service for s in receiver.trace(trace_id)} >= {
        "hybridinference-gateway",
        "hybridinference-router",
    }
