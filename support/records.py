"""The logger's stored request records, read as tests need them.

A record's key (request_id) is one the gateway makes unique; tests know a request by the
x-request-id they sent (or the id the gateway returned), which the record keeps as
client_request_id, so they look records up by that.
"""

from __future__ import annotations

import grpc

from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.mesh import Mesh


def records_sent_as(logger_address: str, client_id: str) -> list[logger_pb2.RequestRecord]:
    """The stored records of the requests sent with ``client_id`` as x-request-id, newest
    first."""
    with grpc.insecure_channel(logger_address) as channel:
        stub = logger_pb2_grpc.LoggerServiceStub(channel)
        reply = stub.ListRecords(
            logger_pb2.ListRecordsRequest(client_request_id=client_id, page_size=100), timeout=5
        )
    return list(reply.records)


def record_sent_as(logger_address: str, client_id: str) -> logger_pb2.RequestRecord | None:
    """The one stored record of the request sent with ``client_id``; None until it is stored."""
    found = records_sent_as(logger_address, client_id)
    assert len(found) <= 1, f"{len(found)} records sent as {client_id}"
    return found[0] if found else None


def get_record(mesh: Mesh, request_id: str) -> logger_pb2.RequestRecord | None:
    """The record of one request (by the id its client sent or was given), or None while the
    logger has not stored it (yet)."""
    return record_sent_as(mesh.address("logger"), request_id)
