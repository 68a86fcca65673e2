"""The key table in PostgreSQL (asyncpg), used when logger.database_url is set."""

from __future__ import annotations

from typing import Any

import asyncpg

from hybridinference.common.database import POSTGRES_ERRORS, migrate_postgres, redact
from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import (
    COLUMNS,
    SCHEMA,
    KeyStore,
    KeyStoreError,
    limits_json,
    models_json,
    row_to_key,
)


class PostgresKeyStore(KeyStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresKeyStore:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=10)
        except POSTGRES_ERRORS as error:
            raise KeyStoreError(f"cannot connect to PostgreSQL at {redact(dsn)}: {error}") from None
        try:
            await migrate_postgres(pool, SCHEMA)
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
        except POSTGRES_ERRORS as error:
            raise KeyStoreError(f"PostgreSQL key store: {error}") from None
