"""Every RPC of every service contract is implemented by its servicer and registered by its
service's own bootstrap (``build``), with the contract's streaming shape — including the tables
built by hand (the logger's WriteRecords decoder, the gateway's wire guard).

The contracts come from the generated descriptors, so an RPC added to a .proto and not served
fails here instead of answering UNIMPLEMENTED in production.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor

import hybridinference
from hybridinference.common.server import Service
from hybridinference.common.settings import MeshSettings, load_settings
from hybridinference.gateway import server as gateway_server
from hybridinference.gateway.admin_servicer import AdminServicer
from hybridinference.gateway.console_servicer import ConsoleServicer
from hybridinference.gateway.openai_servicer import OpenAIServicer
from hybridinference.gateway.typed_servicer import GatewayServicer
from hybridinference.logger import server as logger_server
from hybridinference.logger.servicer import LoggerServicer
from hybridinference.providers import server as providers_server
from hybridinference.providers.servicer import ProviderServicer
from hybridinference.router import server as router_server
from hybridinference.router.servicer import RouterServicer

Build = Callable[[Any, MeshSettings], Any]


class Served(NamedTuple):
    servicer: type
    # The bootstrap that registers it, and the settings it needs to run here.
    build: Build


async def _build_worker(server: Any, settings: MeshSettings) -> Service:
    return await providers_server.build_worker(server, settings.providers[0])


SERVED: dict[str, Served] = {
    "hybridinference.gateway.v1.GatewayService": Served(GatewayServicer, gateway_server.build),
    "hybridinference.gateway.v1.AdminService": Served(AdminServicer, gateway_server.build),
    "hybridinference.gateway.v1.ConsoleService": Served(ConsoleServicer, gateway_server.build),
    "hybridinference.openai.v1.OpenAIService": Served(OpenAIServicer, gateway_server.build),
    "hybridinference.router.v1.RouterService": Served(RouterServicer, router_server.build),
    "hybridinference.provider.v1.ProviderService": Served(ProviderServicer, _build_worker),
    "hybridinference.logger.v1.LoggerService": Served(LoggerServicer, logger_server.build),
}


def _contract_modules() -> Iterator[ModuleType]:
    """Every generated *_pb2 module under hybridinference.<area>.v1."""
    root = Path(hybridinference.__file__).parent
    for area in sorted(p.name for p in root.iterdir() if (p / "v1" / "__init__.py").is_file()):
        package = f"hybridinference.{area}.v1"
        for info in pkgutil.iter_modules([str(root / area / "v1")]):
            if info.name.endswith("_pb2"):
                yield importlib.import_module(f"{package}.{info.name}")


SERVICES: dict[str, ServiceDescriptor] = {
    service.full_name: service
    for module in _contract_modules()
    for service in module.DESCRIPTOR.services_by_name.values()
}


class _Details(NamedTuple):
    """The grpc.HandlerCallDetails a generic handler is asked with: the path, no metadata."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class RecordingServer:
    """Stands in for grpc.aio.Server in a service's ``build``: keeps what gets registered."""

    def __init__(self) -> None:
        # The names the service announces to health checks and reflection (Service).
        self.service_names: list[str] = []
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.setdefault(service, {}).update(handlers)

    def handler(self, service: str, method: str) -> grpc.RpcMethodHandler | None:
        """The handler a call to /service/method reaches: registered ones first, as grpc does."""
        found = self.registered.get(service, {}).get(method)
        if found is not None:
            return found
        for generic in self.generic:
            found = generic.service(_Details(f"/{service}/{method}"))
            if found is not None:
                return found
        return None


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> MeshSettings:
    tmp = tmp_path_factory.mktemp("contracts")
    return load_settings(
        None,
        gateway={"log_spool_dir": str(tmp / "gateway-spool")},
        logger={"sqlite_path": str(tmp / "requests.db"), "metrics_port": 0},
    )


async def _build_all(settings: MeshSettings) -> dict[int, RecordingServer]:
    built: dict[int, RecordingServer] = {}
    for served in SERVED.values():
        if id(served.build) in built:
            continue
        server = RecordingServer()
        service: Service = await served.build(server, settings)
        server.service_names = list(service.service_names)
        for cleanup in service.cleanups:
            await cleanup()
        built[id(served.build)] = server
    return built


@pytest.fixture(scope="module")
def servers(settings: MeshSettings) -> dict[int, RecordingServer]:
    """One RecordingServer per distinct build, each built (and cleaned up) once, on a loop of
    its own: only what got registered is looked at afterwards."""
    return asyncio.run(_build_all(settings))


def test_every_service_contract_is_served() -> None:
    assert sorted(SERVICES) == sorted(SERVED)


@pytest.mark.parametrize("name", sorted(SERVED))
def test_every_rpc_is_implemented_by_its_servicer(name: str) -> None:
    servicer = SERVED[name].servicer
    missing = []
    for method in SERVICES[name].methods:
        owner = next((cls for cls in servicer.__mro__ if method.name in vars(cls)), None)
        # The generated base class only answers UNIMPLEMENTED.
        if owner is None or owner.__module__.endswith("_pb2_grpc"):
            missing.append(method.name)
    assert missing == [], f"{servicer.__name__} does not implement {missing}"


@pytest.mark.parametrize("name", sorted(SERVED))
def test_every_rpc_is_registered_with_its_streaming_shape(
    name: str, servers: dict[int, RecordingServer]
) -> None:
    server = servers[id(SERVED[name].build)]
    assert name in server.service_names  # health and reflection know it
    problems = []
    for method in SERVICES[name].methods:
        handler = server.handler(name, method.name)
        if handler is None:
            problems.append(f"{method.name}: not registered")
        elif (handler.request_streaming, handler.response_streaming) != (
            method.client_streaming,
            method.server_streaming,
        ):
            problems.append(f"{method.name}: registered with the wrong streaming shape")
    assert problems == []
