"""The router process against real provider worker processes (the simulated provider)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridinference.common.errors import from_rpc_error
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from support.polling import poll
from support.procs import ServiceProcess, free_port, start_service, write_config

FAST = {"ttft_ms": 5, "itl_ms": 2, "output_tokens": 8}


def mesh_config(w1_port: int, w2_port: int, router_port: int) -> dict[str, Any]:
    return {
        "log_level": "INFO",
        "router": {
            "port": router_port,
            "health_interval_s": 0.2,
            "connect_timeout_s": 0.5,
            "grace_period_s": 1,
        },
        "providers": [
            {
                "name": "w1",
                "port": w1_port,
                "grace_period_s": 1,
                "endpoints": [
                    {
                        "id": "ok-1",
                        "model": "sim-ok",
                        "price_prompt_per_1m": 1.0,
                        "price_completion_per_1m": 2.0,
                        "sim": FAST,
                    },
                    {"id": "fail-1", "model": "sim-fail", "sim": {**FAST, "fail_rate": 1.0}},
                    {
                        "id": "abort-1",
                        "model": "sim-abort",
                        "sim": {**FAST, "abort_after_tokens": 3},
                    },
                    {
                        "id": "slow-1",
                        "model": "sim-slow",
                        "sim": {"ttft_ms": 5, "itl_ms": 50, "output_tokens": 400},
                    },
                ],
            },
            {
                "name": "w2",
                "port": w2_port,
                "grace_period_s": 1,
                "endpoints": [
                    {"id": "ok-2", "model": "sim-ok-2", "sim": FAST},
                ],
            },
        ],
        "models": [
            {"name": "ok", "endpoints": ["ok-1"]},
            {"name": "fail-first", "endpoints": ["fail-1", "ok-1"]},
            {"name": "abort-first", "endpoints": ["abort-1", "ok-1"]},
            {"name": "slow", "endpoints": ["slow-1"]},
            {"name": "spread", "endpoints": ["ok-2", "ok-1"]},
            {"name": "only-2", "endpoints": ["ok-2"]},
        ],
    }


class Mesh:
    def __init__(self, tmp: Path) -> None:
        ports = free_port(), free_port(), free_port()
        config = write_config(tmp / "mesh.yaml", mesh_config(*ports))
        self.w1 = start_service(
            ["hybridinference.providers", "--worker", "w1"],
            config,
            f"127.0.0.1:{ports[0]}",
            tmp,
            "w1",
        )
        self.w2 = start_service(
            ["hybridinference.providers", "--worker", "w2"],
            config,
            f"127.0.0.1:{ports[1]}",
            tmp,
            "w2",
        )
        self.router = start_service(
            ["hybridinference.router"], config, f"127.0.0.1:{ports[2]}", tmp, "router"
        )
        self.channel = grpc.insecure_channel(self.router.address)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)

    def processes(self) -> list[ServiceProcess]:
        return [self.w1, self.w2, self.router]

    def close(self) -> None:
        self.channel.close()
        for process in reversed(self.processes()):
            process.stop()

    def endpoints(self) -> dict[str, router_pb2.EndpointState]:
        reply = self.stub.ListEndpoints(router_pb2.ListEndpointsRequest(), timeout=2)
        return {e.id: e for e in reply.endpoints}


def request(model: str, **fields: Any) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id="it-1",
        model=model,
        messages=[chat_pb2.ChatMessage(role="user", content="hello router")],
        **fields,
    )


def route(
    mesh: Mesh, model: str, timeout: float | None = 10, **fields: Any
) -> list[router_pb2.RouteResponse]:
    return list(mesh.stub.Route(request(model, **fields), timeout=timeout))


def route_error(mesh: Mesh, model: str) -> tuple[list[router_pb2.RouteResponse], grpc.RpcError]:
    got: list[router_pb2.RouteResponse] = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in mesh.stub.Route(request(model), timeout=10):
            got.append(response)
    return got, caught.value


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = Mesh(tmp_path_factory.mktemp("router-mesh"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def fresh_mesh(tmp_path: Path) -> Iterator[Mesh]:
    """A mesh of its own, for tests that kill processes."""
    running = Mesh(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_stream_reaches_client_with_selection_and_completion(mesh: Mesh) -> None:
    # No deadline on purpose: the router must cope with a caller that sets none.
    responses = route(mesh, "ok", timeout=None)
    first, last = responses[0], responses[-1]
    # Queued for however long the router took to start the attempt (a fraction of a ms here).
    assert 0 <= first.selection.queued_ms < 1000
    first.selection.ClearField("queued_ms")
    assert first.selection == router_pb2.Selection(
        endpoint="ok-1", provider="sim", served_model="sim-ok", attempts=1
    )
    assert first.delta
    assert len("".join(r.delta for r in responses).split()) == 8
    assert [r.HasField("selection") for r in responses].count(True) == 1
    assert [r.HasField("completion") for r in responses].count(True) == 1
    usage = last.completion.usage
    assert usage.completion_tokens == 8 and usage.total_tokens == usage.prompt_tokens + 8
    assert last.completion.finish_reason == chat_pb2.FINISH_REASON_STOP
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    assert last.completion.cost_usd == pytest.approx(expected)


def test_failing_endpoint_first_is_served_by_the_next(mesh: Mesh) -> None:
    before = mesh.endpoints()["fail-1"].failures_total
    responses = route(mesh, "fail-first")
    assert responses[0].selection.endpoint == "ok-1"
    assert responses[0].selection.attempts == 2
    assert responses[-1].HasField("completion")
    assert mesh.endpoints()["fail-1"].failures_total == before + 1


def test_mid_stream_abort_reaches_the_client_without_retry(mesh: Mesh) -> None:
    ok_before = mesh.endpoints()["ok-1"].requests_total
    got, error = route_error(mesh, "abort-first")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "after 3 tokens" in (error.details() or "")
    assert from_rpc_error(error).reason == "injected_abort"
    assert got[0].selection.endpoint == "abort-1"
    assert len([r for r in got if r.delta]) == 3
    assert not any(r.HasField("completion") for r in got)
    assert mesh.endpoints()["ok-1"].requests_total == ok_before


def test_unknown_model_is_not_found(mesh: Mesh) -> None:
    _, error = route_error(mesh, "no-such-model")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(error).reason == "model_not_found"
    assert "ok" in (error.details() or "")


def test_pinned_endpoint_of_another_model_is_invalid(mesh: Mesh) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        route(mesh, "ok", pinned_endpoint="ok-2")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(caught.value)
    assert [v.field for v in error.violations] == ["pinned_endpoint"]
    assert route(mesh, "spread", pinned_endpoint="ok-1")[0].selection.endpoint == "ok-1"


def test_list_models_and_endpoints(mesh: Mesh) -> None:
    models = {m.name: m for m in mesh.stub.ListModels(router_pb2.ListModelsRequest()).models}
    assert list(models["spread"].endpoints) == ["ok-2", "ok-1"]
    assert models["spread"].strategy == "round_robin"
    assert list(models["spread"].providers) == ["sim"]
    assert models["spread"].owned_by == "hybridinference"
    endpoints = mesh.endpoints()
    assert set(endpoints) == {"ok-1", "fail-1", "abort-1", "slow-1", "ok-2"}
    assert endpoints["ok-2"].worker_address == mesh.w2.address
    assert endpoints["ok-1"].model == "sim-ok"
    ok = endpoints["ok-1"]
    assert ok.circuit_state == router_pb2.CIRCUIT_STATE_CLOSED
    assert ok.locality == "cloud"
    assert (ok.price_prompt_per_1m, ok.price_completion_per_1m) == (1.0, 2.0)


def test_client_cancellation_reaches_the_provider(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.w1.address) as channel:
        worker = provider_pb2_grpc.ProviderServiceStub(channel)

        def cancelled_total() -> int:
            reply = worker.GetStatus(provider_pb2.GetStatusRequest(endpoint="slow-1"), timeout=2)
            return int(reply.endpoints[0].cancelled_total)

        before = cancelled_total()
        call = mesh.stub.Route(request("slow"), timeout=30)
        first = next(call)
        assert first.selection.endpoint == "slow-1"
        next(call)
        call.cancel()
        poll(
            lambda: (cancelled_total() == before + 1) or None, 1.0, "the worker to count the cancel"
        )
    poll(lambda: (mesh.endpoints()["slow-1"].in_flight == 0) or None, 1.0, "in_flight back to 0")


def test_killed_worker_flips_health_and_traffic_moves(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    poll(lambda: (mesh.endpoints()["ok-2"].healthy) or None, 5.0, "ok-2 healthy after start")
    assert route(mesh, "spread")[0].selection.endpoint == "ok-2"

    mesh.w2.stop(signal.SIGKILL)

    # Requests right after the kill, before any probe noticed, are still served by w1.
    for _ in range(3):
        responses = route(mesh, "spread")
        assert responses[0].selection.endpoint == "ok-1"
        assert responses[-1].HasField("completion")
    poll(lambda: (not mesh.endpoints()["ok-2"].healthy) or None, 5.0, "ok-2 to turn unhealthy")
    state = mesh.endpoints()["ok-2"]
    assert state.health_detail
    assert mesh.endpoints()["ok-1"].healthy

    _, error = route_error(mesh, "only-2")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert from_rpc_error(error).reason == "no_healthy_endpoint"
    # Which endpoint failed, and how, is in the router's log; the message stays general.
    assert "UNAVAILABLE" in (error.details() or "")
    assert "ok-2" not in (error.details() or "")
