"""Config hot reload of a real router process: file change and SIGHUP, an in-flight stream that
survives the swap, and an invalid config that is rejected while the old one keeps serving."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridinference.common.v1 import chat_pb2
from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from support.polling import poll
from support.procs import ServiceProcess, free_port, start_service, write_config


def mesh_config(worker_port: int, router_port: int, models: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "router": {
            "port": router_port,
            "health_interval_s": 0.2,
            "reload_poll_interval_s": 0.1,
            "grace_period_s": 1,
        },
        "providers": [
            {
                "name": "w",
                "port": worker_port,
                "grace_period_s": 1,
                "endpoints": [
                    {
                        "id": "fast",
                        "model": "up",
                        "sim": {"ttft_ms": 2, "itl_ms": 1, "output_tokens": 4},
                    },
                    {
                        "id": "slow",
                        "model": "up",
                        "sim": {"ttft_ms": 2, "itl_ms": 40, "output_tokens": 30},
                    },
                ],
            }
        ],
        "models": models,
    }


class Router:
    def __init__(self, tmp: Path) -> None:
        self.ports = free_port(), free_port()
        self.path = tmp / "mesh.yaml"
        self.write([{"name": "m", "endpoints": ["fast"]}, {"name": "slow", "endpoints": ["slow"]}])
        self.worker = start_service(
            ["hybridinference.providers", "--worker", "w"],
            self.path,
            f"127.0.0.1:{self.ports[0]}",
            tmp,
            "w",
        )
        self.router = start_service(
            ["hybridinference.router"], self.path, f"127.0.0.1:{self.ports[1]}", tmp, "router"
        )
        self.channel = grpc.insecure_channel(self.router.address)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)

    def write(self, models: list[dict[str, Any]]) -> None:
        write_config(self.path, mesh_config(*self.ports, models))

    def models(self) -> dict[str, router_pb2.ModelRoute]:
        reply = self.stub.ListModels(router_pb2.ListModelsRequest(), timeout=2)
        return {m.name: m for m in reply.models}

    def route(self, model: str) -> list[router_pb2.RouteResponse]:
        return list(self.stub.Route(request(model), timeout=10))

    def processes(self) -> list[ServiceProcess]:
        return [self.worker, self.router]

    def close(self) -> None:
        self.channel.close()
        for process in reversed(self.processes()):
            process.stop()


def request(model: str) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id="reload", model=model, messages=[chat_pb2.ChatMessage(role="user", content="hi")]
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Router]:
    r = Router(tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_file_change_reloads_without_dropping_an_in_flight_stream(running: Router) -> None:
    stream = running.stub.Route(request("slow"), timeout=30)
    first = next(stream)
    assert first.selection.endpoint == "slow"

    running.write(
        [
            {"name": "m", "endpoints": ["fast", "slow"], "strategy": "least_load"},
            {"name": "slow", "endpoints": ["slow"]},
            {"name": "added", "endpoints": ["fast"]},
        ]
    )
    poll(lambda: running.models().get("added"), 10.0, "the reloaded config")
    assert running.models()["m"].strategy == "least_load"

    rest = list(stream)
    assert rest[-1].HasField("completion")
    assert rest[-1].completion.usage.completion_tokens == 30
    assert running.route("added")[-1].HasField("completion")
    assert "config reloaded" in running.router.logs()


def test_invalid_config_on_sighup_is_rejected_and_the_old_one_serves(running: Router) -> None:
    running.path.write_text(
        running.path.read_text().replace("name: m\n", "name: m\n  strategy: fastest\n", 1)
    )
    running.router.proc.send_signal(signal.SIGHUP)
    poll(
        lambda: "config reload rejected" in running.router.logs() or None,
        10.0,
        "the rejection log line",
    )
    assert "strategy" in running.router.logs()
    assert running.router.proc.poll() is None
    assert running.route("m")[-1].HasField("completion")
    assert set(running.models()) == {"m", "slow"}
