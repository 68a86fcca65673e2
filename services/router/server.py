"""Wires the router together: endpoint table, health monitor, strategies, relay, servicer."""

from __future__ import annotations

import argparse

import grpc

from hybridinference.router.v1 import router_pb2, router_pb2_grpc
from services.common.server import Service
from services.common.settings import MeshSettings
from services.router.endpoints import EndpointTable
from services.router.health import HealthMonitor
from services.router.relay import Relay
from services.router.servicer import RouterServicer
from services.router.strategies import Strategy, create_strategy

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


async def build(server: grpc.aio.Server, settings: MeshSettings) -> Service:
    table = EndpointTable.from_settings(settings)
    health = HealthMonitor(
        table, settings.router.health_interval_s, settings.router.connect_timeout_s
    )
    strategies = build_strategies(table)
    relay = Relay(table, health, strategies, settings.router)
    router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(relay), server)
    return Service(
        name="router",
        service_names=[SERVICE_NAME],
        # Stop probing before closing the channels the probes use.
        cleanups=[health.stop, table.close],
        on_started=[health.start],
    )


def build_strategies(table: EndpointTable) -> dict[str, Strategy]:
    # One strategy instance per model: its state (e.g. the rotation) belongs to that model.
    return {name: create_strategy(m.strategy, m.options) for name, m in table.models.items()}


def select(settings: MeshSettings, args: argparse.Namespace) -> tuple[str, int, float]:
    router = settings.router
    return router.host, router.port, router.grace_period_s
