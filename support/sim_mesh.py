"""A router process in front of several sim worker processes with scripted latency, capacity and
failures. Used by the router's simulation tests and by bench/routing_study.py.

Every process gets a free port; the config is one YAML file, rewritten when a scenario changes
an endpoint (a restarted worker reads the new behaviour; the router hot-reloads it).
"""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import grpc

from hybridinference.common.v1 import chat_pb2
from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from support.procs import ServiceProcess, free_port, start_service, write_config


def endpoint(
    id: str,
    *,
    price: tuple[float, float] = (0.0, 0.0),
    locality: str = "cloud",
    **sim: Any,
) -> dict[str, Any]:
    """One sim endpoint: ``sim`` holds SimEndpointSettings fields (ttft_ms, max_concurrency...)."""
    return {
        "id": id,
        "model": f"{id}-model",
        "price_prompt_per_1m": price[0],
        "price_completion_per_1m": price[1],
        "locality": locality,
        "sim": sim,
    }


class SimMesh:
    def __init__(
        self,
        tmp: Path,
        workers: dict[str, list[dict[str, Any]]],
        models: list[dict[str, Any]],
        router: dict[str, Any] | None = None,
        colocated: frozenset[str] = frozenset(),
    ) -> None:
        """``colocated``: workers hosted inside the router process (no process of their own)."""
        self.tmp = tmp
        self.path = tmp / "mesh.yaml"
        self.ports = {name: free_port() for name in workers}
        self.router_port = free_port()
        self.config: dict[str, Any] = {
            "log_level": "WARNING",
            "router": {
                "port": self.router_port,
                "health_interval_s": 0.2,
                "connect_timeout_s": 0.5,
                "grace_period_s": 1,
                **(router or {}),
            },
            "providers": [
                {
                    "name": name,
                    "port": self.ports[name],
                    "grace_period_s": 1,
                    "colocated": name in colocated,
                    "endpoints": eps,
                }
                for name, eps in workers.items()
            ],
            "models": models,
        }
        write_config(self.path, self.config)
        self.workers: dict[str, ServiceProcess] = {}
        self.router: ServiceProcess | None = None
        try:
            for name in workers:
                if name not in colocated:
                    self.workers[name] = self._start_worker(name)
            self.router = start_service(
                ["hybridinference.router"], self.path, self.router_address, tmp, "router"
            )
        except BaseException:
            self.close()
            raise
        self.channel = grpc.insecure_channel(self.router_address)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)

    @property
    def router_address(self) -> str:
        return f"127.0.0.1:{self.router_port}"

    def _start_worker(self, name: str) -> ServiceProcess:
        return start_service(
            ["hybridinference.providers", "--worker", name],
            self.path,
            f"127.0.0.1:{self.ports[name]}",
            self.tmp,
            f"worker-{name}",
        )

    def kill_worker(self, name: str) -> None:
        self.workers[name].stop(signal.SIGKILL)

    def restart_worker(self, name: str, **sim_changes: Any) -> None:
        """Stops a worker, applies ``sim_changes`` to all its endpoints, and starts it again on
        the same port."""
        self.workers[name].stop()
        config = copy.deepcopy(self.config)
        for worker in config["providers"]:
            if worker["name"] == name:
                for ep in worker["endpoints"]:
                    ep["sim"] = {**ep["sim"], **sim_changes}
        self.config = config
        write_config(self.path, config)
        self.workers[name] = self._start_worker(name)

    def endpoints(self) -> dict[str, router_pb2.EndpointState]:
        reply = self.stub.ListEndpoints(router_pb2.ListEndpointsRequest(), timeout=5)
        return {e.id: e for e in reply.endpoints}

    def route(
        self, model: str, content: str = "hello", timeout: float = 20
    ) -> list[router_pb2.RouteResponse]:
        return list(self.stub.Route(request(model, content), timeout=timeout))

    def close(self) -> None:
        if hasattr(self, "channel"):
            self.channel.close()
        if self.router is not None:
            self.router.stop()
        for worker in self.workers.values():
            worker.stop()


def request(model: str, content: str = "hello", request_id: str = "sim") -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id=request_id,
        model=model,
        messages=[chat_pb2.ChatMessage(role="user", content=content)],
    )
