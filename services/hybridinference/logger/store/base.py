"""The one interface both request-log stores implement, and the errors they raise."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybridinference.common.database import Schema
from hybridinference.logger.pagination import Cursor, ListFilters, decode_token, encode_token
from hybridinference.logger.rows import Row, row_to_record
from hybridinference.logger.traffic import (
    MAX_SAMPLES,
    SeriesTraffic,
    TrafficQuery,
    TrafficSample,
    aggregate,
)
from hybridinference.logger.usage import UsageBucket, UsageQuery
from hybridinference.logger.v1 import logger_pb2

MAX_PAGE_SIZE = 1000

# An alias because RecordStore.list shadows the builtin inside the class body.
Rows = list[Row]
Buckets = list[UsageBucket]
Samples = list[TrafficSample]
Series = dict[str, SeriesTraffic]


class StoreError(Exception):
    """Base of the store's errors."""


class MigrationError(StoreError):
    """A schema migration could not be applied; the logger must not start."""


class StoreUnavailable(StoreError):
    """The database could not be reached or refused the operation; the caller may retry."""


class StoreRejected(StoreError):
    """The database will always refuse this batch: a row in it breaks a constraint or a type
    (bad data, not a bad moment), so retrying it as it is cannot help."""


# The request log's migrations (logger/migrations/<dialect>), run by the common runner.
SCHEMA = Schema(
    name="request log",
    directory=Path(__file__).resolve().parent.parent / "migrations",
    version_table="schema_version",
    lock_id=0x4869_4C6F_6701,
    error=MigrationError,
)


@dataclass(frozen=True)
class WriteResult:
    # Rows newly stored by this call.
    inserted: int
    # Records whose request_id was already stored (replays), left untouched.
    duplicates: int


@dataclass(frozen=True)
class Page:
    records: list[logger_pb2.RequestRecord]
    # Empty on the last page.
    next_page_token: str


def _request_id(record: logger_pb2.RequestRecord) -> str:
    return record.request_id


def _row_request_id(row: Row) -> str:
    return row.request_id


class RecordStore(abc.ABC):
    """A request-log store. Records passed in must already be validated."""

    async def write_batch(self, records: Sequence[logger_pb2.RequestRecord]) -> WriteResult:
        """Stores the records in one transaction; returns only after it is committed.

        Idempotent by request_id: a record already stored is counted as a duplicate.
        """
        if not records:
            return WriteResult(0, 0)
        # The first of several records with one request id wins, as it would across batches;
        # deduplicating here keeps the usage rollup from counting the others.
        unique: dict[str, logger_pb2.RequestRecord] = {}
        for record in records:
            unique.setdefault(record.request_id, record)
        # In request id order: concurrent writers (the drainer keeps two batches in flight,
        # several loggers may share a database) then take row locks in one order, so a request
        # id present in two of their batches makes one wait for the other, never a deadlock.
        inserted = await self._insert(sorted(unique.values(), key=_request_id))
        return WriteResult(inserted, len(records) - inserted)

    async def write_rows(self, rows: Sequence[Row]) -> WriteResult:
        """write_batch for records already converted (logger/validation.py admit)."""
        if not rows:
            return WriteResult(0, 0)
        unique: dict[str, Row] = {}
        for row in rows:
            unique.setdefault(row.request_id, row)
        inserted = await self._insert_rows(sorted(unique.values(), key=_row_request_id))
        return WriteResult(inserted, len(rows) - inserted)

    async def get(self, request_id: str) -> logger_pb2.RequestRecord | None:
        row = await self._fetch_one(request_id)
        return row_to_record(row) if row else None

    async def list(self, filters: ListFilters, page_size: int, page_token: str = "") -> Page:
        """Newest first. Raises InvalidPageToken for a token it did not issue for these filters."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be in 1..{MAX_PAGE_SIZE}, got {page_size}")
        cursor = decode_token(page_token, filters) if page_token else None
        # One extra row tells whether another page exists, so the last page has no token.
        rows = await self._fetch_page(filters, cursor, page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = ""
        if more:
            last = rows[-1]
            token = encode_token(Cursor(last.started_at, last.request_id), filters)
        return Page([row_to_record(row) for row in rows], token)

    async def traffic(self, query: TrafficQuery) -> tuple[Series, bool]:
        """Per model, every bucket of the window and its total; True when more than MAX_SAMPLES
        records fell in it (the newest were counted)."""
        samples = await self._fetch_traffic(query, MAX_SAMPLES + 1)
        truncated = len(samples) > MAX_SAMPLES
        return aggregate(query, samples[:MAX_SAMPLES]), truncated

    @abc.abstractmethod
    async def _fetch_traffic(self, query: TrafficQuery, limit: int) -> Samples:
        """The window's samples, newest first, at most ``limit``."""

    @abc.abstractmethod
    async def usage(self, query: UsageQuery) -> Buckets:
        """Per-day totals from the hourly rollup, ordered by day, key, model."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _insert(self, records: Sequence[logger_pb2.RequestRecord]) -> int:
        """Inserts the records (unique request ids) as rows, skipping stored ones, and rolls the
        inserted ones up into usage_hourly in the same transaction; returns how many were
        inserted. The store converts (record_to_row), so it can overlap that with its I/O."""

    @abc.abstractmethod
    async def _insert_rows(self, rows: Sequence[Row]) -> int:
        """_insert for rows (unique request ids)."""

    @abc.abstractmethod
    async def _fetch_one(self, request_id: str) -> Row | None: ...

    @abc.abstractmethod
    async def _fetch_page(
        self, filters: ListFilters, cursor: Cursor | None, limit: int
    ) -> Rows: ...
