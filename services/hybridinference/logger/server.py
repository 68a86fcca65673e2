"""Builds the logger's gRPC server: store (migrated), spool, drainer, and the API."""

from __future__ import annotations

import argparse
import logging

import grpc

from hybridinference.common.server import Service
from hybridinference.common.settings import MeshSettings
from hybridinference.common.spool import Spool, SpoolError
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.capture import CapturePolicy
from hybridinference.logger.decoding import decode_batch
from hybridinference.logger.drain import SpoolDrainer
from hybridinference.logger.metrics import register_logger_metrics
from hybridinference.logger.servicer import LoggerServicer
from hybridinference.logger.stats import LoggerStats
from hybridinference.logger.store import StoreError, open_store
from hybridinference.logger.v1 import logger_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = logger_pb2.DESCRIPTOR.services_by_name["LoggerService"].full_name
# Time the drainer gets at shutdown to write the backlog; the rest waits for the next start.
_DRAIN_ON_STOP_S = 5.0


def register(servicer: LoggerServicer, server: grpc.aio.Server) -> None:
    """Like the generated add_LoggerServiceServicer_to_server, but WriteRecords decodes each
    record on its own (hybridinference/logger/decoding.py)."""

    def unary(method: object, request_type: type, response_type: type) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=request_type.FromString,  # type: ignore[attr-defined]
            response_serializer=response_type.SerializeToString,  # type: ignore[attr-defined]
        )

    handlers = {
        "WriteRecords": grpc.unary_unary_rpc_method_handler(
            servicer.WriteRecords,
            request_deserializer=decode_batch,
            response_serializer=logger_pb2.WriteRecordsResponse.SerializeToString,
        ),
        "GetRecord": unary(
            servicer.GetRecord, logger_pb2.GetRecordRequest, logger_pb2.GetRecordResponse
        ),
        "ListRecords": unary(
            servicer.ListRecords, logger_pb2.ListRecordsRequest, logger_pb2.ListRecordsResponse
        ),
        "GetUsage": unary(
            servicer.GetUsage, logger_pb2.GetUsageRequest, logger_pb2.GetUsageResponse
        ),
        "GetTraffic": unary(
            servicer.GetTraffic, logger_pb2.GetTrafficRequest, logger_pb2.GetTrafficResponse
        ),
        "GetStats": unary(
            servicer.GetStats, logger_pb2.GetStatsRequest, logger_pb2.GetStatsResponse
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def build(server: grpc.aio.Server, settings: MeshSettings) -> Service:
    config = settings.logger
    try:
        spool = Spool.open(config.resolved_spool_dir, max_bytes=config.spool_max_bytes)
    except SpoolError as error:
        log.critical("cannot open the logger spool", extra={"error": str(error)})
        raise SystemExit(f"logger: {error}") from None
    try:
        store = await open_store(config)
    except StoreError as error:
        spool.close()
        # Serving with a half-migrated or unreachable store would accept records it cannot keep.
        log.critical("cannot open the request log store", extra={"error": str(error)})
        raise SystemExit(f"logger: {error}") from None
    stats = LoggerStats()
    register_logger_metrics(stats, spool)
    rows = AttachedRows()
    drainer = SpoolDrainer(spool, rows, store, stats, config.batch_size, config.store_retry_max_s)
    capture = CapturePolicy(config.capture_content, config.capture_max_chars)
    register(LoggerServicer(store, spool, rows, stats, capture), server)

    async def start() -> None:
        drainer.start()

    async def stop() -> None:
        await drainer.stop(_DRAIN_ON_STOP_S)
        await store.close()
        spool.close()

    return Service(name="logger", service_names=[SERVICE_NAME], cleanups=[stop], on_started=[start])


def select(settings: MeshSettings, args: argparse.Namespace) -> tuple[str, int, float]:
    del args  # --port is applied by hybridinference.common.server.main
    return settings.logger.host, settings.logger.port, settings.logger.grace_period_s
