"""The one server bootstrap every service uses.

A grpc.aio server on uvloop with grpc.health.v1 (NOT_SERVING while draining), server reflection,
structured logs, and a graceful SIGTERM/SIGINT: stop accepting, let in-flight calls finish within
the grace period, then run the service's cleanup.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from hybridinference.common.channels import listen, server_options
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.logs import configure_logging
from hybridinference.common.metrics import (
    RpcMetricsInterceptor,
    configured_metrics_port,
    serve_metrics,
)
from hybridinference.common.settings import CONFIG_ENV, ConfigError, MeshSettings, load_settings
from hybridinference.common.tracing import Tracing, setup_tracing
from hybridinference.common.wire_guard import GuardedRegistration

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class Service:
    """What a service contributes to the bootstrap."""

    name: str
    # Fully qualified gRPC service names the server exposes (for health and reflection).
    service_names: Sequence[str]
    # Runs after the server stopped accepting calls and drained.
    cleanups: list[Cleanup] = field(default_factory=list)
    # Runs once the server is listening, e.g. to start background tasks.
    on_started: list[Cleanup] = field(default_factory=list)
    # TLS for the listener; None = the `tls` section of the settings named like the service.
    tls: TlsSettings | None = None


Build = Callable[[grpc.aio.Server, MeshSettings], Awaitable[Service]]


def _section_tls(settings: MeshSettings, name: str) -> TlsSettings | None:
    section = getattr(settings, name, None) if name in ("gateway", "router", "logger") else None
    return section.tls if section is not None else None


async def serve(
    build: Build,
    settings: MeshSettings,
    host: str,
    port: int,
    grace_s: float,
    metrics_port: int = 0,
    tracing: Tracing | None = None,
    max_receive_bytes: int | None = None,
) -> None:
    # RPC metrics for every method of every service, from this one place; with /metrics off
    # (port 0) nobody could read them, so the interceptor is left out entirely.
    interceptors = [RpcMetricsInterceptor()] if metrics_port else []
    if tracing is not None:
        interceptors = [*tracing.server_interceptors, *interceptors]
    server = grpc.aio.server(options=server_options(max_receive_bytes), interceptors=interceptors)
    service = await build(server, settings)
    serve_metrics(host, metrics_port, service.name)
    health = health_aio.HealthServicer()
    # Every service's health check is reachable from the public port (through Envoy): garbage
    # bytes get INVALID_ARGUMENT there too, not UNKNOWN and a logged traceback.
    health_pb2_grpc.add_HealthServicer_to_server(health, GuardedRegistration(server))
    reflection.enable_server_reflection(
        [
            *service.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    tls = service.tls or _section_tls(settings, service.name)
    try:
        bound = listen(server, f"{host}:{port}", tls)
    except RuntimeError:  # grpc raises this when the address is taken (see server_options)
        bound = 0
    if bound == 0:
        raise SystemExit(f"{service.name}: cannot listen on {host}:{port} (address in use?)")
    await server.start()
    for name in ["", *service.service_names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    for hook in service.on_started:
        await hook()
    # The supervisor and tests read this line to learn the bound port (port 0 = ephemeral).
    log.info("listening", extra={"address": f"{host}:{bound}", "port": bound})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("draining", extra={"grace_period_s": grace_s})
    await health.enter_graceful_shutdown()
    await server.stop(grace_s)
    for cleanup in service.cleanups:
        try:
            await cleanup()
        except Exception:
            log.exception("cleanup failed")
    if tracing is not None:
        await tracing.shutdown()
    log.info("stopped")


def main(
    name: str,
    build: Build,
    select: Callable[[MeshSettings, argparse.Namespace], tuple[str, int, float]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    max_receive_bytes: Callable[[MeshSettings], int] | None = None,
) -> None:
    """Entry point shared by every service's ``__main__``.

    ``select`` picks the host, port and grace period of this process from the mesh settings;
    ``max_receive_bytes`` the limit on received messages of a public port (default: the mesh's);
    ``--port`` overrides the port (0 picks a free one), ``--host`` the bind host.
    """
    parser = argparse.ArgumentParser(prog=f"python -m hybridinference.{name}")
    parser.add_argument("--config", help="mesh YAML file (default: $HI_CONFIG or built-in)")
    parser.add_argument("--port", type=int, help="override the listening port (0 = any free)")
    parser.add_argument("--metrics-port", type=int, help="override the /metrics port (0 = off)")
    # In a container the config names the host peers dial (e.g. "router"); the process itself
    # binds the wildcard, so the bind host can differ from the configured one.
    parser.add_argument("--host", help="override the listening host (e.g. 0.0.0.0)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.config is not None:
        # This process serves from that file: whatever reloads it later (the router's hot
        # reload) finds it where a file given by environment would be.
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    configure_logging(name, settings.log_level)
    host, port, grace = select(settings, args)
    if args.port is not None:
        port = args.port
    if args.host is not None:
        host = args.host
    metrics_port = configured_metrics_port(name, settings, getattr(args, "worker", None))
    if args.metrics_port is not None:
        metrics_port = args.metrics_port
    worker = getattr(args, "worker", None)
    tracing = setup_tracing(settings.tracing, f"provider-{worker}" if worker else name)
    limit = max_receive_bytes(settings) if max_receive_bytes is not None else None
    uvloop.run(serve(build, settings, host, port, grace, metrics_port, tracing, limit))
