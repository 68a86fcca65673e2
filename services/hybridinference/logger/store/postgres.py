"""The PostgreSQL request-log store (asyncpg pool), used when logger.database_url is set.

A batch is one transaction. Normally its rows are streamed with binary COPY straight into
request_log, and one statement rolls them up into usage_hourly from arrays of the few columns the
rollup needs. COPY has no ON CONFLICT: a batch holding a request id that is already stored (a
replay) fails with a unique violation, is rolled back as a whole, and is written again through the
merge path: COPY into a per-connection temporary staging table, then one statement that moves the
rows into request_log with ``ON CONFLICT DO NOTHING`` and rolls up only the newly inserted ones.
Replays come in runs (a spool replayed after an outage or a crash), so after a conflict the store
keeps merging until a batch comes through without duplicates.

A direct COPY goes in slices, and the next slice's records are converted to rows (Python, this
process) while the server stores the previous one: on two cores the two overlap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from hybridinference.common.database import Migration, migrate_postgres, redact
from hybridinference.logger.pagination import Cursor, ListFilters
from hybridinference.logger.rows import COLUMN_LIST, COLUMNS, Row, record_to_row
from hybridinference.logger.store.base import (
    SCHEMA,
    RecordStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from hybridinference.logger.store.sql import list_query, traffic_query
from hybridinference.logger.traffic import TrafficQuery, TrafficSample
from hybridinference.logger.usage import UsageBucket, UsageQuery, usage_bucket
from hybridinference.logger.v1 import logger_pb2

log = logging.getLogger(__name__)

# PostgreSQL type of each column, for the unnest arrays (same order as COLUMNS).
_TYPES: dict[str, str] = {
    "started_at": "timestamptz",
    "attempts": "int4",
    "fallbacks": "int4",
    "hedged": "bool",
    "stream": "bool",
    "ttft_ms": "float8",
    "latency_ms": "float8",
    "prompt_tokens": "int4",
    "completion_tokens": "int4",
    "cached_tokens": "int4",
    "total_tokens": "int4",
    "cost_usd": "float8",
    "sampling": "jsonb",
    "metadata": "jsonb",
    "reasoning_tokens": "int4",
    "tools_offered": "jsonb",
    "tools_called": "jsonb",
    "features": "jsonb",
    "queue_ms": "float8",
}
_STAGE = "request_log_stage"
# ON COMMIT DELETE ROWS: a batch's staged rows disappear with its transaction, whatever happens.
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f'"{name}" {_TYPES.get(name, "text")}' for name in COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
# What the rollup reads of each new row, in this order.
_ROLLUP_COLUMNS = ("started_at", "api_key_id", "requested_model", "status", "cost_usd", *_TOKENS)

# Ends both rollup statements: adds a batch's groups to the hourly rows they belong to.
_ADD_TO_ROLLUP = f"""
-- One lock order for every writer, so concurrent loggers cannot deadlock on the rollup.
ORDER BY 1, 2, 3
ON CONFLICT (hour, api_key_id, model) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    errors = u.errors + EXCLUDED.errors,
    cost_usd = u.cost_usd + EXCLUDED.cost_usd,
    {", ".join(f"{t} = u.{t} + EXCLUDED.{t}" for t in _TOKENS)}
"""


def _rollup(source: str) -> str:
    """Adds the rows of ``source`` (a relation with _ROLLUP_COLUMNS) to usage_hourly."""
    return f"""
    INSERT INTO usage_hourly AS u (hour, api_key_id, model, requests, errors, cost_usd,
                                   {", ".join(_TOKENS)})
    SELECT date_trunc('hour', started_at, 'UTC'), api_key_id, requested_model, count(*),
           count(*) FILTER (WHERE status <> 'OK'), sum(cost_usd),
           {", ".join(f"coalesce(sum({t}), 0)" for t in _TOKENS)}
    FROM {source}
    GROUP BY 1, 2, 3
    {_ADD_TO_ROLLUP}
    """


# After a direct COPY every row is new: this process sums them per (hour, key, model) and the
# statement adds the sums (as arrays, one element per group).
_ROLLUP_ARRAYS = f"""
INSERT INTO usage_hourly AS u (hour, api_key_id, model, requests, errors, cost_usd,
                               {", ".join(_TOKENS)})
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                     $6::float8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[])
{_ADD_TO_ROLLUP}
"""
# Rows per COPY in a direct write: the next slice is converted while the server stores one.
_SLICE = 500
# Empties the staging table as it reads it; rolls up only the rows that were not stored yet.
_MERGE = f"""
WITH staged AS (
    DELETE FROM {_STAGE} RETURNING {COLUMN_LIST}
), inserted AS (
    INSERT INTO request_log ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM staged
    ON CONFLICT (request_id) DO NOTHING
    RETURNING {", ".join(_ROLLUP_COLUMNS)}
), rolled AS ({_rollup("inserted")})
SELECT count(*) FROM inserted
"""
_USAGE_COLUMNS = ("requests", "errors", *_TOKENS, "cost_usd")
_SELECT_ONE = f"SELECT {COLUMN_LIST} FROM request_log WHERE request_id = $1"
# Errors meaning "the database is not there right now", which a client may retry.
_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_POOL_MAX = 4
# SQLSTATE classes of errors in the data itself: 22 data exception (a value out of range, bad
# encoding), 23 integrity constraint violation (CHECK, NOT NULL, foreign key; unique violations
# are replays and handled by the merge), 54 program limit exceeded (a row too large). The same
# batch fails the same way every time.
_REJECTING_CLASSES = frozenset({"22", "23", "54"})


def _write_error(error: BaseException) -> StoreError:
    """StoreRejected for an error the batch's data causes, else StoreUnavailable."""
    state = getattr(error, "sqlstate", None)
    if isinstance(error, asyncpg.PostgresError) and str(state or "")[:2] in _REJECTING_CLASSES:
        return StoreRejected(f"PostgreSQL refused the batch: {error} (SQLSTATE {state})")
    return StoreUnavailable(f"PostgreSQL write failed: {error}")


class PostgresStore(RecordStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # False while batches hold already-stored rows (replays): they go through the merge.
        self._direct = True

    @classmethod
    async def open(cls, dsn: str, migrations: list[Migration] | None = None) -> PostgresStore:
        """Connects and applies pending migrations; fails if the database is unreachable."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=_POOL_MAX, timeout=10, init=_prepare_connection
            )
        except _TRANSIENT as error:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {redact(dsn)}: {error}"
            ) from error
        try:
            await migrate_postgres(pool, SCHEMA, migrations)
        except BaseException:
            await pool.close()
            raise
        log.info("request log store ready", extra={"store": "postgres", "dsn": redact(dsn)})
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _insert(self, records: Sequence[logger_pb2.RequestRecord]) -> int:
        return await self._write(records, [])

    async def _insert_rows(self, rows: Sequence[Row]) -> int:
        return await self._write((), list(rows))

    async def _write(self, records: Sequence[logger_pb2.RequestRecord], rows: list[Row]) -> int:
        """Stores ``records`` (converted here, into ``rows``), or ``rows`` when there are no
        records; returns how many were new."""
        if self._direct:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await _copy_direct(conn, records, rows)
                return len(rows)
            except asyncpg.UniqueViolationError:
                # Rolled back: the batch holds rows already stored. Merge from now on.
                self._direct = False
            except _TRANSIENT as error:
                raise _write_error(error) from error
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                inserted = await _copy_and_merge(conn, records, rows)
        except _TRANSIENT as error:
            raise _write_error(error) from error
        # A batch without duplicates: the replays are over, back to the direct COPY.
        self._direct = inserted == len(rows)
        return inserted

    async def usage(self, query: UsageQuery) -> list[UsageBucket]:
        params: list[object] = [query.start, query.end]
        where = "hour >= $1 AND hour < $2"
        for column, value in (("api_key_id", query.api_key_id), ("model", query.model)):
            if value:
                params.append(value)
                where += f" AND {column} = ${len(params)}"
        sums = ", ".join(f"sum({c})" for c in _USAGE_COLUMNS)
        sql = (
            f"SELECT date_trunc('day', hour, 'UTC'), api_key_id, model, {sums} "
            f"FROM usage_hourly WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        try:
            fetched: list[Any] = await self._pool.fetch(sql, *params)
        except _TRANSIENT as error:
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        return [usage_bucket(tuple(row)) for row in fetched]

    async def _fetch_traffic(self, query: TrafficQuery, limit: int) -> list[TrafficSample]:
        sql = traffic_query(numbered=True)
        try:
            fetched: list[Any] = await self._pool.fetch(sql, query.start, query.end, limit)
        except _TRANSIENT as error:
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        return [TrafficSample._make(row) for row in fetched]

    async def _fetch_one(self, request_id: str) -> Row | None:
        rows = await self._read(_SELECT_ONE, [request_id])
        return rows[0] if rows else None

    async def _fetch_page(
        self, filters: ListFilters, cursor: Cursor | None, limit: int
    ) -> list[Row]:
        params: list[object] = []
        sql = list_query(filters, cursor, limit, params, numbered=True, db_time=lambda t: t)
        return await self._read(sql, params)

    async def _read(self, sql: str, params: Sequence[object]) -> list[Row]:
        try:
            fetched: list[Any] = await self._pool.fetch(sql, *params)
        except _TRANSIENT as error:
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        return [Row._make(values) for values in fetched]


async def _copy_direct(
    conn: asyncpg.Connection, records: Sequence[logger_pb2.RequestRecord], rows: list[Row]
) -> None:
    """Inside the caller's transaction: COPY into request_log, then the rollup of every row.
    Raises UniqueViolationError when a row's request id is already stored."""
    await _copy_in_slices(conn, "request_log", records, rows)
    await conn.execute(_ROLLUP_ARRAYS, *_rollup_columns(rows))


async def _copy_in_slices(
    conn: asyncpg.Connection,
    table: str,
    records: Sequence[logger_pb2.RequestRecord],
    rows: list[Row],
) -> None:
    """COPYs ``rows``, then the records after the first len(rows), appending their rows to
    ``rows`` as it converts them, slice by slice, the next slice while the server stores the
    previous one; the caller keeps what was converted if the COPY fails."""
    total = max(len(rows), len(records))
    rows += map(record_to_row, records[len(rows) : _SLICE])
    copied = 0
    while copied < total:
        copy = asyncio.ensure_future(
            conn.copy_records_to_table(table, records=rows[copied:], columns=COLUMNS)
        )
        copied = len(rows)
        try:
            # One turn of the loop lets the COPY task encode and send its rows before the
            # conversion below holds the CPU.
            await asyncio.sleep(0)
            rows += map(record_to_row, records[copied : copied + _SLICE])
        finally:
            await copy


def _rollup_columns(rows: Sequence[Row]) -> list[list[Any]]:
    """The rows' usage_hourly increments per (hour, key, model), as the rollup's columns.

    Summed here rather than by the server: a batch has few groups, and sending each row's nine
    rollup values as arrays cost this process more than adding them up."""
    # Keyed by the UTC hour as a number (hours since 0001-01-01): datetime.replace on an aware
    # datetime costs about a microsecond, and this runs once per row.
    groups: dict[tuple[int, str, str], list[Any]] = {}
    for row in rows:
        started = (
            row.started_at.astimezone(UTC) if row.started_at.tzinfo is not UTC else row.started_at
        )
        key = (started.toordinal() * 24 + started.hour, row.api_key_id, row.requested_model)
        totals = groups.get(key)
        if totals is None:
            totals = groups[key] = [0, 0, 0.0, 0, 0, 0, 0]
        totals[0] += 1
        if row.status != "OK":
            totals[1] += 1
        totals[2] += row.cost_usd
        # A record has all four token counts or none.
        if row.prompt_tokens is not None:
            totals[3] += row.prompt_tokens
            totals[4] += row.completion_tokens or 0
            totals[5] += row.cached_tokens or 0
            totals[6] += row.total_tokens or 0
    columns: list[list[Any]] = [[] for _ in range(3 + 7)]
    for (hours, api_key_id, model), totals in groups.items():
        day, hour = divmod(hours, 24)
        start = datetime.fromordinal(day).replace(hour=hour, tzinfo=UTC)
        for column, value in zip(columns, (start, api_key_id, model, *totals), strict=True):
            column.append(value)
    return columns


async def _copy_and_merge(
    conn: asyncpg.Connection, records: Sequence[logger_pb2.RequestRecord], rows: list[Row]
) -> int:
    """Inside the caller's transaction: stores the rows (see _copy_in_slices) not stored yet,
    rolls them up; returns how many were new."""
    await _copy_in_slices(conn, _STAGE, records, rows)
    inserted: int = await conn.fetchval(_MERGE)
    return inserted


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    # Once per pooled connection: temporary tables live as long as their session.
    await conn.execute(_CREATE_STAGE)
