"""Wires the gateway's servicers into the shared bootstrap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import grpc

from hybridinference.common.server import Service
from hybridinference.common.settings import MeshSettings
from hybridinference.common.wire_guard import GuardedRegistration
from hybridinference.gateway.admin_servicer import AdminServicer
from hybridinference.gateway.console_servicer import ConsoleServicer
from hybridinference.gateway.edge import Edge, EdgeStartError
from hybridinference.gateway.metrics import register_shipper_metrics
from hybridinference.gateway.openai_servicer import OpenAIServicer
from hybridinference.gateway.partial_usage import output_prices
from hybridinference.gateway.router_client import RouterClient
from hybridinference.gateway.runtime import GatewayRuntime
from hybridinference.gateway.typed_servicer import GatewayServicer
from hybridinference.gateway.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    console_pb2,
    console_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from hybridinference.openai.v1 import openai_pb2, openai_pb2_grpc
from hybridinference.router.hosted_in_gateway import host_router_in_gateway


async def build(server: grpc.aio.Server, settings: MeshSettings) -> Service:
    try:
        edge = await Edge.open(settings)
    except EdgeStartError as error:
        raise SystemExit(f"gateway: {error}") from None
    started: list[Callable[[], Awaitable[None]]] = []
    stopped: list[Callable[[], Awaitable[None]]] = []
    router = None
    if settings.router.colocated:
        core, stub = host_router_in_gateway(settings)
        router = RouterClient(stub)
        started.append(core.start)
        stopped.append(core.stop)
    runtime = GatewayRuntime(
        settings.gateway,
        edge,
        router_tls=settings.router.tls,
        logger_tls=settings.logger.tls,
        router=router,
        capture_content=settings.logger.capture_content,
        capture_max_chars=settings.logger.capture_max_chars,
        output_prices=output_prices(settings),
    )
    register_shipper_metrics(runtime.shipper)
    # Public services: undecodable request bytes get INVALID_ARGUMENT, not UNKNOWN.
    guarded = cast(grpc.aio.Server, GuardedRegistration(server))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(runtime), guarded)
    openai_pb2_grpc.add_OpenAIServiceServicer_to_server(OpenAIServicer(runtime), guarded)
    admin = AdminServicer(runtime)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, guarded)
    console_pb2_grpc.add_ConsoleServiceServicer_to_server(ConsoleServicer(), guarded)
    return Service(
        name="gateway",
        service_names=[
            gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
            openai_pb2.DESCRIPTOR.services_by_name["OpenAIService"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            console_pb2.DESCRIPTOR.services_by_name["ConsoleService"].full_name,
        ],
        on_started=[runtime.start, *started],
        # The gateway's calls have drained before a hosted router stops.
        cleanups=[runtime.close, admin.log_reader.close, *stopped],
    )
