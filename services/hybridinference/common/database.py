"""What the mesh's database stores share: versioned SQL migrations, one runner, DSN redaction.

A store's schema is a folder of files ``NNNN_name.sql`` per dialect (``postgres``, ``sqlite``)
and a version table of its own. The request log (logger/migrations, ``schema_version``) and the
API-key store (keys/migrations, ``api_key_schema_version``) are two such schemas, so they can live
in one database without their versions colliding. Pending migrations are applied at start, each
in a transaction together with its version row, so running them again is a no-op and a failure
leaves the schema as it was; concurrent starts take turns (PostgreSQL: an advisory lock per
schema; SQLite: ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiosqlite
import asyncpg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Errors meaning "the database is not there right now" (or refused a statement).
POSTGRES_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Schema:
    """One store's migrations: where they are, where their versions are kept, how to fail."""

    name: str  # for messages and logs, e.g. "request log"
    directory: Path  # holds one folder per dialect
    version_table: str
    # PostgreSQL advisory lock serialising this schema's migrations (any constant, per schema).
    lock_id: int
    # Raised, with a message naming the migration, when one cannot be loaded or applied.
    error: type[Exception]

    def migrations(self, dialect: str) -> list[Migration]:
        """The dialect's migrations in version order; a misnamed or duplicate file is an error."""
        folder = self.directory / dialect
        if not folder.is_dir():
            raise self.error(f"migration directory not found: {folder}")
        found: dict[int, Migration] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix != ".sql":
                continue
            match = _NAME.match(path.name)
            if not match:
                raise self.error(f"migration file name must look like 0001_name.sql: {path}")
            version = int(match.group(1))
            if version in found:
                raise self.error(f"two migrations with version {version} in {folder}")
            found[version] = Migration(version, path.stem, path.read_text())
        if not found:
            raise self.error(f"no migrations in {folder}")
        return [found[v] for v in sorted(found)]


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def split_statements(script: str) -> list[str]:
    """Splits an SQLite script into statements (sqlite3's cursor runs one at a time).

    ``executescript`` is not used because it commits any open transaction first, which would
    break the one-transaction-per-migration guarantee.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements


async def migrate_postgres(
    pool: asyncpg.Pool, schema: Schema, migrations: list[Migration] | None = None
) -> None:
    """Applies the schema's pending PostgreSQL migrations (all of them unless given)."""
    table = schema.version_table
    for migration in migrations if migrations is not None else schema.migrations("postgres"):
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.lock_id)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = await conn.fetchval(
                    f"SELECT 1 FROM {table} WHERE version = $1", migration.version
                )
                if done:
                    continue
                # No arguments: the simple query protocol runs the whole multi-statement file.
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {table} (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        except POSTGRES_ERRORS as error:
            raise schema.error(f"PostgreSQL migration {migration.name} failed: {error}") from error
        log.info(
            "applied migration",
            extra={"store": "postgres", "schema": schema.name, "migration": migration.name},
        )


# Every version row gets its time here: the key store's older version table has no default.
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


async def migrate_sqlite(
    db: aiosqlite.Connection, schema: Schema, path: str, migrations: list[Migration] | None = None
) -> None:
    """Applies the schema's pending SQLite migrations on ``db`` (opened in autocommit mode)."""
    table = schema.version_table
    # BEGIN IMMEDIATE takes the write lock before reading the versions, so two processes
    # starting together cannot both apply the same migration.
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, "
            f"name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT ({_NOW}))"
        )
        async with db.execute(f"SELECT version FROM {table}") as cursor:
            applied = {int(row[0]) for row in await cursor.fetchall()}
        await db.execute("COMMIT")
    except sqlite3.Error as error:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise schema.error(f"cannot read {table} of {path}: {error}") from error
    for migration in migrations if migrations is not None else schema.migrations("sqlite"):
        if migration.version not in applied:
            await _apply_sqlite(db, schema, migration, path)


async def _apply_sqlite(
    db: aiosqlite.Connection, schema: Schema, migration: Migration, path: str
) -> None:
    table = schema.version_table
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute(
            f"SELECT 1 FROM {table} WHERE version = ?", [migration.version]
        ) as cursor:
            if await cursor.fetchone():
                # Another process applied it between our read and this transaction.
                await db.execute("COMMIT")
                return
        for statement in split_statements(migration.sql):
            await db.execute(statement)
        await db.execute(
            f"INSERT INTO {table} (version, name, applied_at) VALUES (?, ?, {_NOW})",
            [migration.version, migration.name],
        )
        await db.execute("COMMIT")
    except (sqlite3.Error, ValueError) as error:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise schema.error(
            f"SQLite migration {migration.name} failed on {path}: {error}"
        ) from error
    log.info(
        "applied migration",
        extra={"store": "sqlite", "schema": schema.name, "migration": migration.name},
    )
