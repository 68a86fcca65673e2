"""Wires the router together: endpoint table, health monitor, strategies, relay, servicer,
config reloader."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import grpc

from hybridinference.common.server import Service
from hybridinference.common.settings import MeshSettings
from hybridinference.router.endpoints import EndpointTable
from hybridinference.router.health import HealthMonitor
from hybridinference.router.metrics import register_table_metrics
from hybridinference.router.relay import Relay
from hybridinference.router.reload import ConfigReloader, build_strategies
from hybridinference.router.servicer import RouterServicer
from hybridinference.router.v1 import router_pb2, router_pb2_grpc

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


@dataclass
class RouterCore:
    """Everything the router runs, whether in its own process or hosted in the gateway."""

    relay: Relay
    health: HealthMonitor
    reloader: ConfigReloader

    @classmethod
    def from_settings(cls, settings: MeshSettings) -> RouterCore:
        table = EndpointTable.from_settings(settings)
        health = HealthMonitor(
            table, settings.router.health_interval_s, settings.router.connect_timeout_s
        )
        relay = Relay(table, health, build_strategies(table), settings.router)
        register_table_metrics(lambda: relay.table)
        reloader = ConfigReloader(relay, health, settings.router.reload_poll_interval_s)
        return cls(relay, health, reloader)

    async def start(self) -> None:
        await self.health.start()
        await self.reloader.start()

    async def stop(self) -> None:
        # Stop reloading and probing before closing the channels the probes use; the table in
        # use now, since a reload may have replaced the first one.
        try:
            await self.reloader.stop()
        finally:
            try:
                await self.health.stop()
            finally:
                await self.relay.table.close()


async def build(server: grpc.aio.Server, settings: MeshSettings) -> Service:
    core = RouterCore.from_settings(settings)
    router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(core.relay), server)
    return Service(
        name="router",
        service_names=[SERVICE_NAME],
        cleanups=[core.stop],
        on_started=[core.start],
    )


def select(settings: MeshSettings, args: argparse.Namespace) -> tuple[str, int, float]:
    router = settings.router
    return router.host, router.port, router.grace_period_s
