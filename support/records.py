"""The logger's stored request records, read as tests need them."""

from __future__ import annotations

import grpc

from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.mesh import Mesh


def get_record(mesh: Mesh, request_id: str) -> logger_pb2.RequestRecord | None:
    """The record of one request, or None while the logger has not stored it (yet)."""
    with grpc.insecure_channel(mesh.address("logger")) as channel:
        stub = logger_pb2_grpc.LoggerServiceStub(channel)
        try:
            return stub.GetRecord(
                logger_pb2.GetRecordRequest(request_id=request_id), timeout=5
            ).record
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
