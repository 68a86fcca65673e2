"""The embedded request-log store: one SQLite file in WAL mode (used when no database is set).

One writer connection, serialised by a lock because SQLite transactions belong to a connection,
and one reader connection, so lists and lookups read committed data and never wait on a write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from hybridinference.common.database import Migration, migrate_sqlite
from hybridinference.logger.pagination import Cursor, ListFilters
from hybridinference.logger.rows import COLUMN_LIST, COLUMNS, Row, record_to_row
from hybridinference.logger.store.base import (
    SCHEMA,
    RecordStore,
    StoreRejected,
    StoreUnavailable,
)
from hybridinference.logger.store.sql import list_query, traffic_query
from hybridinference.logger.traffic import TrafficQuery, TrafficSample
from hybridinference.logger.usage import UsageBucket, UsageQuery, hourly_rollup, usage_bucket
from hybridinference.logger.v1 import logger_pb2

log = logging.getLogger(__name__)

_INSERT = (
    f"INSERT INTO request_log ({COLUMN_LIST}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_ONE = f"SELECT {COLUMN_LIST} FROM request_log WHERE request_id = ?"
_STARTED_AT = COLUMNS.index("started_at")
_BOOLEANS = (COLUMNS.index("stream"), COLUMNS.index("hedged"))
_USAGE_COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost_usd",
)
_ROLLUP = (
    f"INSERT INTO usage_hourly (hour, api_key_id, model, {', '.join(_USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in range(3 + len(_USAGE_COLUMNS)))}) "
    "ON CONFLICT (hour, api_key_id, model) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _USAGE_COLUMNS)
)
# Well under SQLite's limit on host parameters per statement.
_LOOKUP_CHUNK = 500


def iso_utc(moment: datetime) -> str:
    """Fixed-width UTC text ('0001-01-01T00:00:00.000000Z'); sorts in time order."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


async def _connect(path: str) -> aiosqlite.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself, nothing implicit.
    db = await aiosqlite.connect(path, isolation_level=None)
    # Another process (a second logger, an operator's sqlite3 shell) may hold the lock briefly.
    await db.execute("PRAGMA busy_timeout = 5000")
    return db


class SqliteStore(RecordStore):
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, migrations: list[Migration] | None = None) -> SqliteStore:
        """Creates the file (and its directory) if needed and applies pending migrations."""
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path)
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(f"cannot open SQLite database {path}: {error}") from error
        try:
            await writer.execute("PRAGMA journal_mode = WAL")
            # FULL: a batch is acknowledged to the shipper only once it is on disk.
            await writer.execute("PRAGMA synchronous = FULL")
            await migrate_sqlite(writer, SCHEMA, path, migrations)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        log.info("request log store ready", extra={"store": "sqlite", "path": path})
        return cls(writer, reader)

    async def close(self) -> None:
        async with self._write_lock:
            await self._writer.close()
        await self._reader.close()

    async def _insert(self, records: Sequence[logger_pb2.RequestRecord]) -> int:
        return await self._insert_rows([record_to_row(record) for record in records])

    async def _insert_rows(self, rows: Sequence[Row]) -> int:
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    # Under the write lock nobody else inserts, so "not stored yet" stays true
                    # until the commit; only those rows are inserted and rolled up.
                    stored = await self._stored_ids([row.request_id for row in rows])
                    fresh = [row for row in rows if row.request_id not in stored]
                    await self._writer.executemany(_INSERT, [_to_params(row) for row in fresh])
                    await self._writer.executemany(
                        _ROLLUP,
                        [
                            (iso_utc(hour), key, model, *vars(totals).values())
                            for (hour, key, model), totals in hourly_rollup(fresh)
                        ],
                    )
                    await self._writer.execute("COMMIT")
                except BaseException:
                    if self._writer.in_transaction:
                        await self._writer.execute("ROLLBACK")
                    raise
            except (sqlite3.IntegrityError, sqlite3.DataError) as error:
                # The rows themselves (a constraint, a value too large): retrying cannot help.
                raise StoreRejected(f"SQLite refused the batch: {error}") from error
            except sqlite3.Error as error:
                raise StoreUnavailable(f"SQLite write failed: {error}") from error
        return len(fresh)

    async def _stored_ids(self, request_ids: Sequence[str]) -> set[str]:
        stored: set[str] = set()
        for start in range(0, len(request_ids), _LOOKUP_CHUNK):
            chunk = request_ids[start : start + _LOOKUP_CHUNK]
            sql = (
                "SELECT request_id FROM request_log WHERE request_id IN "
                f"({', '.join('?' for _ in chunk)})"
            )
            async with self._writer.execute(sql, chunk) as cursor:
                stored.update(str(row[0]) for row in await cursor.fetchall())
        return stored

    async def usage(self, query: UsageQuery) -> list[UsageBucket]:
        params: list[object] = [iso_utc(query.start), iso_utc(query.end)]
        where = "hour >= ? AND hour < ?"
        for column, value in (("api_key_id", query.api_key_id), ("model", query.model)):
            if value:
                params.append(value)
                where += f" AND {column} = ?"
        sums = ", ".join(f"sum({c})" for c in _USAGE_COLUMNS)
        sql = (
            f"SELECT substr(hour, 1, 10) AS day, api_key_id, model, {sums} FROM usage_hourly "
            f"WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        try:
            async with self._reader.execute(sql, params) as cursor:
                fetched = await cursor.fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"SQLite read failed: {error}") from error
        return [
            usage_bucket((parse_iso_utc(f"{row[0]}T00:00:00.000000Z"), *row[1:])) for row in fetched
        ]

    async def _fetch_traffic(self, query: TrafficQuery, limit: int) -> list[TrafficSample]:
        params = [iso_utc(query.start), iso_utc(query.end), limit]
        try:
            async with self._reader.execute(traffic_query(numbered=False), params) as cursor:
                fetched = await cursor.fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"SQLite read failed: {error}") from error
        return [
            TrafficSample(parse_iso_utc(row[0]), row[1], bool(row[2]), *row[3:]) for row in fetched
        ]

    async def _fetch_one(self, request_id: str) -> Row | None:
        rows = await self._read(_SELECT_ONE, [request_id])
        return rows[0] if rows else None

    async def _fetch_page(
        self, filters: ListFilters, cursor: Cursor | None, limit: int
    ) -> list[Row]:
        params: list[object] = []
        sql = list_query(filters, cursor, limit, params, numbered=False, db_time=iso_utc)
        return await self._read(sql, params)

    async def _read(self, sql: str, params: Sequence[object]) -> list[Row]:
        try:
            async with self._reader.execute(sql, params) as cursor:
                fetched = await cursor.fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"SQLite read failed: {error}") from error
        return [_from_values(values) for values in fetched]


def _to_params(row: Row) -> tuple[Any, ...]:
    values: list[Any] = list(row)
    values[_STARTED_AT] = iso_utc(row.started_at)
    for index in _BOOLEANS:
        values[index] = int(values[index])
    return tuple(values)


def _from_values(values: Sequence[Any]) -> Row:
    adapted = list(values)
    adapted[_STARTED_AT] = parse_iso_utc(adapted[_STARTED_AT])
    for index in _BOOLEANS:
        adapted[index] = bool(adapted[index])
    return Row._make(adapted)
