"""Builds the logger's gRPC server: opens the store (running migrations) and registers the API."""

from __future__ import annotations

import argparse
import logging

import grpc

from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from services.common.server import Service
from services.common.settings import MeshSettings
from services.logger.servicer import LoggerServicer
from services.logger.store import StoreError, open_store

log = logging.getLogger(__name__)

SERVICE_NAME = logger_pb2.DESCRIPTOR.services_by_name["LoggerService"].full_name


async def build(server: grpc.aio.Server, settings: MeshSettings) -> Service:
    try:
        store = await open_store(settings.logger)
    except StoreError as error:
        # Serving with a half-migrated or unreachable store would accept records it cannot keep.
        log.critical("cannot open the request log store", extra={"error": str(error)})
        raise SystemExit(f"logger: {error}") from None
    logger_pb2_grpc.add_LoggerServiceServicer_to_server(
        LoggerServicer(store, settings.logger.batch_size), server
    )
    return Service(name="logger", service_names=[SERVICE_NAME], cleanups=[store.close])


def select(settings: MeshSettings, args: argparse.Namespace) -> tuple[str, int, float]:
    del args  # --port is applied by services.common.server.main
    return settings.logger.host, settings.logger.port, settings.logger.grace_period_s
