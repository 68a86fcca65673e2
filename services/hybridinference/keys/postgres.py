"""The key table in PostgreSQL (asyncpg), used when logger.database_url is set."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.keys.model import ApiKey
from hybridinference.keys.schema import STEPS, VERSION_TABLE
from hybridinference.keys.store import (
    COLUMNS,
    KeyStore,
    KeyStoreError,
    limits_json,
    models_json,
    row_to_key,
)
from hybridinference.logger.store.postgres import redact

# Serialises schema steps across gateways and CLIs starting together (distinct from the logger's).
_SCHEMA_LOCK = 0x4869_4B65_7901
_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresKeyStore(KeyStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresKeyStore:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=10)
        except _ERRORS as error:
            raise KeyStoreError(f"cannot connect to PostgreSQL at {redact(dsn)}: {error}") from None
        try:
            await _migrate(pool)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def insert(self, key: ApiKey) -> None:
        await self._run(
            "execute",
            "INSERT INTO api_key (id, name, key_hash, prefix, admin, models, limits) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            key.id,
            key.name,
            key.key_hash,
            key.prefix,
            key.admin,
            models_json(key),
            limits_json(key),
        )

    async def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL "
        rows = await self._run(
            "fetch", f"SELECT {COLUMNS} FROM api_key {where}ORDER BY created_at, id"
        )
        return [row_to_key(tuple(row)) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        status = await self._run(
            "execute",
            "UPDATE api_key SET revoked_at = now(), revision = nextval('api_key_revision_seq') "
            "WHERE id = $1 AND revoked_at IS NULL",
            key_id,
        )
        return bool(status == "UPDATE 1")

    async def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool:
        # A new revision changes the fingerprint, so every gateway reloads the key's limits.
        status = await self._run(
            "execute",
            "UPDATE api_key SET limits = $2, revision = nextval('api_key_revision_seq') "
            "WHERE id = $1 AND revoked_at IS NULL",
            key_id,
            limits.model_dump_json(exclude_none=True),
        )
        return bool(status == "UPDATE 1")

    async def fingerprint(self) -> tuple[int, int]:
        row = await self._run(
            "fetchrow", "SELECT count(*), COALESCE(sum(revision), 0) FROM api_key"
        )
        return int(row[0]), int(row[1])

    async def _run(self, method: str, sql: str, *args: Any) -> Any:
        try:
            return await getattr(self._pool, method)(sql, *args)
        except _ERRORS as error:
            raise KeyStoreError(f"PostgreSQL key store: {error}") from None


async def _migrate(pool: asyncpg.Pool) -> None:
    for step in STEPS:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = await conn.fetchval(
                    f"SELECT 1 FROM {VERSION_TABLE} WHERE version = $1", step.version
                )
                if done:
                    continue
                for statement in step.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, name) VALUES ($1, $2)",
                    step.version,
                    step.name,
                )
        except _ERRORS as error:
            raise KeyStoreError(f"key store schema step {step.name} failed: {error}") from None
