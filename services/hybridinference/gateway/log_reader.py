"""The gateway's reading client of the logger, for the admin RPCs (records, usage, traffic).

Separate from the record shipper's channel: admin reads are rare and must never queue behind, or
be mistaken for, the write path. The channel is opened on first use, so a gateway whose admin
RPCs are never called never dials it. Logger errors keep their code and details (a bad page
token stays INVALID_ARGUMENT naming the field, an unreachable database UNAVAILABLE with a retry
hint).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import grpc

from hybridinference.common.channels import insecure_channel
from hybridinference.common.errors import ServiceError, from_rpc_error
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc

Reply = TypeVar("Reply")
TIMEOUT_S = 10.0


class LogReader:
    def __init__(self, address: str) -> None:
        self._address = address
        self._channel: grpc.aio.Channel | None = None
        self._stub: logger_pb2_grpc.LoggerServiceAsyncStub | None = None

    def _logger(self) -> logger_pb2_grpc.LoggerServiceAsyncStub:
        if self._stub is None:
            self._channel = insecure_channel(self._address)
            self._stub = cast(
                "logger_pb2_grpc.LoggerServiceAsyncStub",
                logger_pb2_grpc.LoggerServiceStub(self._channel),
            )
        return self._stub

    async def _call(self, rpc: Callable[[], Awaitable[Reply]]) -> Reply:
        try:
            return await rpc()
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE and not error.details():
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE, "the logger is unreachable", "logger_unavailable"
                ) from None
            raise from_rpc_error(error) from None

    async def list_records(
        self, request: logger_pb2.ListRecordsRequest
    ) -> logger_pb2.ListRecordsResponse:
        stub = self._logger()
        return await self._call(lambda: stub.ListRecords(request, timeout=TIMEOUT_S))

    async def get_record(self, request_id: str) -> logger_pb2.RequestRecord:
        """The record keyed by ``request_id``, else the newest one sent with it as the client's
        x-request-id (what a client, the CLI or the playground was given back); NOT_FOUND when
        neither exists."""
        stub = self._logger()
        request = logger_pb2.GetRecordRequest(request_id=request_id)
        try:
            reply: logger_pb2.GetRecordResponse = await self._call(
                lambda: stub.GetRecord(request, timeout=TIMEOUT_S)
            )
        except ServiceError as error:
            if error.code is not grpc.StatusCode.NOT_FOUND:
                raise
            by_client = await self.list_records(
                logger_pb2.ListRecordsRequest(client_request_id=request_id, page_size=1)
            )
            if not by_client.records:
                raise
            return by_client.records[0]
        return reply.record

    async def usage(self, request: logger_pb2.GetUsageRequest) -> logger_pb2.GetUsageResponse:
        stub = self._logger()
        return await self._call(lambda: stub.GetUsage(request, timeout=TIMEOUT_S))

    async def traffic(self, request: logger_pb2.GetTrafficRequest) -> logger_pb2.GetTrafficResponse:
        stub = self._logger()
        return await self._call(lambda: stub.GetTraffic(request, timeout=TIMEOUT_S))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
