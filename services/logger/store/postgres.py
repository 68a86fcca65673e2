"""The PostgreSQL request-log store (asyncpg pool), used when logger.database_url is set.

A batch is one statement: the rows travel as one array per column and are expanded with
``unnest``, so N records cost one round trip, and ``ON CONFLICT DO NOTHING`` makes replays free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.logger.pagination import Cursor, ListFilters
from services.logger.rows import COLUMN_LIST, COLUMNS, Row
from services.logger.store.base import MigrationError, RecordStore, StoreUnavailable
from services.logger.store.migrations import Migration, load_migrations
from services.logger.store.sql import list_query

log = logging.getLogger(__name__)

# PostgreSQL type of each column, for the unnest arrays (same order as COLUMNS).
_TYPES: dict[str, str] = {
    "started_at": "timestamptz",
    "attempts": "int4",
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
}
_INSERT = (
    f"INSERT INTO request_log ({COLUMN_LIST}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{_TYPES.get(name, 'text')}[]" for i, name in enumerate(COLUMNS, 1))
    + ") ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_ONE = f"SELECT {COLUMN_LIST} FROM request_log WHERE request_id = $1"
# Serialises migrations across logger replicas starting at the same time (any constant works).
_MIGRATION_LOCK = 0x4869_4C6F_6701
# Errors meaning "the database is not there right now", which a client may retry.
_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_POOL_MAX = 4


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(RecordStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, migrations: list[Migration] | None = None) -> PostgresStore:
        """Connects and applies pending migrations; fails if the database is unreachable."""
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=_POOL_MAX, timeout=10)
        except _TRANSIENT as error:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {redact(dsn)}: {error}"
            ) from error
        try:
            await _migrate(pool, migrations or load_migrations("postgres"))
        except BaseException:
            await pool.close()
            raise
        log.info("request log store ready", extra={"store": "postgres", "dsn": redact(dsn)})
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _insert(self, rows: Sequence[Row]) -> int:
        columns = [list(values) for values in zip(*rows, strict=True)]
        try:
            status: str = await self._pool.execute(_INSERT, *columns)
        except _TRANSIENT as error:
            raise StoreUnavailable(f"PostgreSQL write failed: {error}") from error
        # The command tag is "INSERT 0 <rows inserted>"; skipped conflicts are not counted.
        return int(status.rsplit(" ", 1)[-1])

    async def _fetch_one(self, request_id: str) -> Row | None:
        rows = await self._read(_SELECT_ONE, [request_id])
        return rows[0] if rows else None

    async def _fetch_page(
        self, filters: ListFilters, cursor: Cursor | None, limit: int
    ) -> list[Row]:
        params: list[object] = []
        cursor_time = cursor.started_at if cursor else None
        sql = list_query(filters, cursor, limit, params, numbered=True, cursor_time=cursor_time)
        return await self._read(sql, params)

    async def _read(self, sql: str, params: Sequence[object]) -> list[Row]:
        try:
            fetched: list[Any] = await self._pool.fetch(sql, *params)
        except _TRANSIENT as error:
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        return [Row._make(values) for values in fetched]


async def _migrate(pool: asyncpg.Pool, migrations: list[Migration]) -> None:
    for migration in migrations:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = await conn.fetchval(
                    "SELECT 1 FROM schema_version WHERE version = $1", migration.version
                )
                if done:
                    continue
                # No arguments: the simple query protocol runs the whole multi-statement file.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        except _TRANSIENT as error:
            raise MigrationError(
                f"PostgreSQL migration {migration.name} failed: {error}"
            ) from error
        log.info("applied migration", extra={"store": "postgres", "migration": migration.name})
