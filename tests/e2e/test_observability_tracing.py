"""One request through Envoy with a W3C traceparent: every service's spans land in one trace."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.mesh import Mesh, mesh_config, running_mesh
from tests.support.otlp import OtlpReceiver, running_receiver
from tests.support.polling import poll


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
    gateway = [
        s for s in spans if s.service == "hybridinference-gateway" and s.parent_span_id == parent
    ]
    # The gateway's server span continues the client's context...
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
    span = provider
    while span is not None:
        chain.append(span.service)
        span = by_id.get(span.parent_span_id)
    assert chain[-1] == "hybridinference-gateway"
    assert "hybridinference-router" in chain
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
