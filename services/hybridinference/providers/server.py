"""Wires one provider worker into the shared bootstrap: its adapters, servicer and cleanup."""

from __future__ import annotations

import argparse
import logging
import sys

import grpc

from hybridinference.common.server import Service
from hybridinference.common.settings import MeshSettings, ProviderWorkerSettings
from hybridinference.provider.v1 import provider_pb2, provider_pb2_grpc
from hybridinference.providers.adapter import build_adapter
from hybridinference.providers.metrics import register_worker_metrics
from hybridinference.providers.servicer import ProviderServicer

log = logging.getLogger(__name__)

SERVICE_NAME: str = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name


def build_servicer(worker: ProviderWorkerSettings) -> ProviderServicer:
    """One adapter per endpoint of the worker, all of the worker's kind."""
    adapters = {endpoint.id: build_adapter(worker.kind, endpoint) for endpoint in worker.endpoints}
    return ProviderServicer(adapters)


async def build_worker(server: grpc.aio.Server, worker: ProviderWorkerSettings) -> Service:
    servicer = build_servicer(worker)
    register_worker_metrics(worker.name, servicer)
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)
    log.info(
        "provider worker ready",
        extra={
            "worker": worker.name,
            "kind": worker.kind,
            "endpoints": [endpoint.id for endpoint in worker.endpoints],
        },
    )
    return Service(
        name=f"providers/{worker.name}",
        service_names=[SERVICE_NAME],
        cleanups=[servicer.close],
        # TLS / mTLS from the worker's own section; the router dials with its client side.
        tls=worker.tls,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--worker",
        required=True,
        metavar="NAME",
        help="name of the worker in the config's `providers` list",
    )


class WorkerSelection:
    """Carries the worker chosen by ``--worker`` from the bootstrap's ``select`` to ``build``.

    The bootstrap hands ``build`` only the settings, not the parsed arguments, and calls
    ``select`` first; this object is the bridge between the two.
    """

    def __init__(self) -> None:
        self._worker: ProviderWorkerSettings | None = None

    def select(self, settings: MeshSettings, args: argparse.Namespace) -> tuple[str, int, float]:
        name: str = args.worker
        try:
            worker = settings.worker(name)
        except KeyError:
            valid = ", ".join(w.name for w in settings.providers) or "(none configured)"
            print(f"providers: unknown worker {name!r}; valid workers: {valid}", file=sys.stderr)
            raise SystemExit(2) from None
        self._worker = worker
        return worker.host, worker.port, worker.grace_period_s

    async def build(self, server: grpc.aio.Server, settings: MeshSettings) -> Service:
        if self._worker is None:
            raise RuntimeError("build called before select")
        return await build_worker(server, self._worker)
