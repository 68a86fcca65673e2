"""LoggerService over a RecordStore: validation and error mapping only, no storage logic."""

from __future__ import annotations

import logging

import grpc

from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from services.common.errors import FieldViolation, ServiceError, abort, invalid_argument
from services.logger.pagination import InvalidPageToken, ListFilters
from services.logger.store import RecordStore, StoreUnavailable
from services.logger.store.base import MAX_PAGE_SIZE
from services.logger.validation import partition

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
# How soon a client should retry when the database is unreachable.
_RETRY_AFTER_S = 1.0


class LoggerServicer(logger_pb2_grpc.LoggerServiceServicer):
    def __init__(self, store: RecordStore, max_rows_per_transaction: int) -> None:
        self._store = store
        self._chunk = max_rows_per_transaction

    async def WriteRecords(
        self, request: logger_pb2.WriteRecordsRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.WriteRecordsResponse:
        valid, rejected = partition(request.records)
        if rejected:
            log.warning(
                "rejected request records",
                extra={"rejected": len(rejected), "first_reason": rejected[0].reason},
            )
        inserted = 0
        try:
            # Bounded transactions; a failure part-way is safe to retry because inserts are
            # idempotent, so the whole batch is reported unavailable and the client resends it.
            for start in range(0, len(valid), self._chunk):
                result = await self._store.write_batch(valid[start : start + self._chunk])
                inserted += result.inserted
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        log.debug("stored records", extra={"inserted": inserted, "replayed": len(valid) - inserted})
        return logger_pb2.WriteRecordsResponse(
            accepted=len(valid),
            rejected=[logger_pb2.RejectedRecord(index=r.index, reason=r.reason) for r in rejected],
        )

    async def GetRecord(
        self, request: logger_pb2.GetRecordRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.GetRecordResponse:
        if not request.request_id:
            await abort(context, invalid_argument([FieldViolation("request_id", "is required")]))
        try:
            record = await self._store.get(request.request_id)
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        if record is None:
            await abort(
                context,
                ServiceError(
                    grpc.StatusCode.NOT_FOUND,
                    f"no request record with request_id {request.request_id!r}",
                    reason="record_not_found",
                ),
            )
        return logger_pb2.GetRecordResponse(record=record)

    async def ListRecords(
        self, request: logger_pb2.ListRecordsRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.ListRecordsResponse:
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            await abort(
                context,
                invalid_argument(
                    [FieldViolation("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")]
                ),
            )
        filters = ListFilters(request.model, request.provider, request.status)
        try:
            page = await self._store.list(filters, page_size, request.page_token)
        except InvalidPageToken as error:
            await abort(context, invalid_argument([FieldViolation("page_token", str(error))]))
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        return logger_pb2.ListRecordsResponse(
            records=page.records, next_page_token=page.next_page_token
        )


def _unavailable(error: StoreUnavailable) -> ServiceError:
    log.error("request log store unavailable", extra={"error": str(error)})
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        "the request log database is unavailable",
        reason="store_unavailable",
        retry_after_s=_RETRY_AFTER_S,
    )
