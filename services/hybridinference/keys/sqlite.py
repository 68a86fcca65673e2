"""The key table in the embedded SQLite request-log file (the default)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from hybridinference.common.database import migrate_sqlite
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SqliteKeyStore(KeyStore):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection: SQLite transactions belong to it, so writes take turns.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteKeyStore:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise KeyStoreError(f"cannot open SQLite database {path}: {error}") from None
        try:
            # The logger writes the same file; wait for its lock instead of failing.
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA journal_mode = WAL")
            await migrate_sqlite(db, SCHEMA, path)
        except sqlite3.Error as error:
            await db.close()
            raise KeyStoreError(f"SQLite key store {path}: {error}") from None
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def insert(self, key: ApiKey) -> None:
        async with self._lock:
            await self._write(
                "INSERT INTO api_key (id, name, key_hash, prefix, admin, models, limits, "
                "created_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(revision), 0) + 1 FROM api_key))",
                (
                    key.id,
                    key.name,
                    key.key_hash,
                    key.prefix,
                    int(key.admin),
                    models_json(key),
                    limits_json(key),
                    _now(),
                ),
            )

    async def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL "
        rows = await self._read(f"SELECT {COLUMNS} FROM api_key {where}ORDER BY created_at, id")
        return [row_to_key(tuple(row), _parse) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self._lock:
            changed = await self._write(
                "UPDATE api_key SET revoked_at = ?, "
                "revision = (SELECT MAX(revision) + 1 FROM api_key) "
                "WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
        return changed == 1

    async def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool:
        # A new revision changes the fingerprint, so every gateway reloads the key's limits.
        async with self._lock:
            changed = await self._write(
                "UPDATE api_key SET limits = ?, "
                "revision = (SELECT MAX(revision) + 1 FROM api_key) "
                "WHERE id = ? AND revoked_at IS NULL",
                (limits.model_dump_json(exclude_none=True), key_id),
            )
        return changed == 1

    async def fingerprint(self) -> tuple[int, int]:
        rows = await self._read("SELECT count(*), COALESCE(sum(revision), 0) FROM api_key")
        return int(rows[0][0]), int(rows[0][1])

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        try:
            cursor = await self._db.execute(sql, params)
            return int(cursor.rowcount)
        except sqlite3.Error as error:
            raise KeyStoreError(f"SQLite key store: {error}") from None

    async def _read(self, sql: str) -> list[Any]:
        try:
            async with self._db.execute(sql) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as error:
            raise KeyStoreError(f"SQLite key store: {error}") from None
