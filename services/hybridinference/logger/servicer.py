"""LoggerService: validation, the spool hand-off and error mapping; no storage logic.

WriteRecords acknowledges a batch once its valid records are fsync'd to the local spool; the
SpoolDrainer writes them to the database. So a slow or absent database never slows the gateways'
shippers, and a logger killed after acknowledging loses nothing. Reads go to the database.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import grpc
from google.protobuf import timestamp_pb2

from hybridinference.common import trace_context
from hybridinference.common.errors import FieldViolation, ServiceError, abort, invalid_argument
from hybridinference.common.spool import Spool, SpoolFull
from hybridinference.logger.attached_rows import AttachedRows
from hybridinference.logger.capture import CapturePolicy, apply_caps
from hybridinference.logger.decoding import DecodedBatch
from hybridinference.logger.pagination import InvalidPageToken, ListFilters
from hybridinference.logger.rows import Row
from hybridinference.logger.stats import LoggerStats, reason_key
from hybridinference.logger.store import RecordStore, StoreUnavailable
from hybridinference.logger.store.base import MAX_PAGE_SIZE
from hybridinference.logger.traffic import TrafficBucket, TrafficQuery, TrafficQueryError
from hybridinference.logger.usage import UsageQuery
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from hybridinference.logger.validation import admit

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
# How soon a client should retry when the database (reads) or the spool (writes) is unavailable.
_RETRY_AFTER_S = 1.0


class LoggerServicer(logger_pb2_grpc.LoggerServiceServicer):
    def __init__(
        self,
        store: RecordStore,
        spool: Spool,
        rows: AttachedRows,
        stats: LoggerStats,
        capture: CapturePolicy,
    ) -> None:
        self._store = store
        self._spool = spool
        self._rows = rows
        self._stats = stats
        self._capture = capture

    async def WriteRecords(
        self,
        request: DecodedBatch | logger_pb2.WriteRecordsRequest,
        context: grpc.aio.ServicerContext,
    ) -> logger_pb2.WriteRecordsResponse:
        batch = request if isinstance(request, DecodedBatch) else DecodedBatch.of(request)
        rejected = list(batch.malformed)
        payloads: list[bytes] = []
        rows: list[Row] = []
        for index, record in batch.records:
            for change in apply_caps(record, self._capture):
                self._stats.truncated[change] += 1
            admitted = admit(record)
            if isinstance(admitted, str):
                rejected.append((index, admitted))
            else:
                payloads.append(record.SerializeToString())
                rows.append(admitted)
        for _, reason in rejected:
            self._stats.rejected[reason_key(reason)] += 1
        if rejected:
            log.warning(
                "rejected request records",
                extra={"rejected": len(rejected), "first_reason": rejected[0][1]},
            )
        try:
            with trace_context.linked_span("store request records", _links(batch, rejected)):
                positions = await self._spool.append(payloads)
            # The rows stay in memory, so the drainer need not convert again.
            self._rows.add(positions, payloads, rows)
        except SpoolFull as error:
            self._stats.spool_full += 1
            await abort(context, _spool_full(error))
        self._stats.accepted += len(payloads)
        return logger_pb2.WriteRecordsResponse(
            accepted=len(payloads),
            rejected=[
                logger_pb2.RejectedRecord(index=index, reason=reason)
                for index, reason in sorted(rejected)
            ],
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
        filters = ListFilters(
            model=request.model,
            provider=request.provider,
            status=request.status,
            api_key_id=request.api_key_id,
            client_request_id=request.client_request_id,
            start_time=request.start_time.ToDatetime(tzinfo=UTC)
            if request.HasField("start_time")
            else None,
            end_time=request.end_time.ToDatetime(tzinfo=UTC)
            if request.HasField("end_time")
            else None,
            endpoint=request.endpoint,
            errors_only=request.errors_only,
        )
        try:
            page = await self._store.list(filters, page_size, request.page_token)
        except InvalidPageToken as error:
            await abort(context, invalid_argument([FieldViolation("page_token", str(error))]))
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        return logger_pb2.ListRecordsResponse(
            records=page.records, next_page_token=page.next_page_token
        )

    async def GetUsage(
        self, request: logger_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.GetUsageResponse:
        try:
            query = UsageQuery.covering(
                request.start_time.ToDatetime(tzinfo=UTC)
                if request.HasField("start_time")
                else None,
                request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
                api_key_id=request.api_key_id,
                model=request.model,
            )
        except (ValueError, OverflowError) as error:
            await abort(context, invalid_argument([FieldViolation("start_time", str(error))]))
        try:
            buckets = await self._store.usage(query)
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        reply = logger_pb2.GetUsageResponse()
        for bucket in buckets:
            out = reply.buckets.add(
                api_key_id=bucket.api_key_id, model=bucket.model, **vars(bucket.totals)
            )
            out.day.FromDatetime(bucket.day)
        return reply

    async def GetTraffic(
        self, request: logger_pb2.GetTrafficRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.GetTrafficResponse:
        try:
            query = TrafficQuery.of(
                _time(request, "start_time"), _time(request, "end_time"), request.bucket_seconds
            )
        except TrafficQueryError as error:
            await abort(context, invalid_argument([FieldViolation(error.field_name, str(error))]))
        try:
            series, truncated = await self._store.traffic(query)
        except StoreUnavailable as error:
            await abort(context, _unavailable(error))
        reply = logger_pb2.GetTrafficResponse(truncated=truncated)
        for model, traffic in series.items():
            out = reply.series.add(model=model)
            for bucket in traffic.buckets:
                _fill(out.buckets.add(), bucket)
            _fill(out.total, traffic.total)
        return reply

    async def GetStats(
        self, request: logger_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> logger_pb2.GetStatsResponse:
        return self._stats.to_proto(self._spool)


def _fill(out: logger_pb2.TrafficBucket, bucket: TrafficBucket) -> None:
    fields = dict(vars(bucket))
    out.start_time.FromDatetime(fields.pop("start"))
    for name, value in fields.items():
        setattr(out, name, value)


def _time(
    request: logger_pb2.GetTrafficRequest, name: Literal["start_time", "end_time"]
) -> datetime | None:
    if not request.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _links(batch: DecodedBatch, rejected: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """(traceparent, request_id) of the records being stored; nothing when tracing is off."""
    if not trace_context.enabled():
        return []
    refused = {index for index, _ in rejected}
    return [
        (record.traceparent, record.request_id)
        for index, record in batch.records
        if index not in refused and record.traceparent
    ]


def _unavailable(error: StoreUnavailable) -> ServiceError:
    log.error("request log store unavailable", extra={"error": str(error)})
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        "the request log database is unavailable",
        reason="store_unavailable",
        retry_after_s=_RETRY_AFTER_S,
    )


def _spool_full(error: SpoolFull) -> ServiceError:
    log.error("request log spool full; refusing records", extra={"error": str(error)})
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        "the request log spool is full (the database has been unavailable for long)",
        reason="spool_full",
        retry_after_s=_RETRY_AFTER_S,
    )
