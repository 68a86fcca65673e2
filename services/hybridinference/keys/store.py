"""The key store: API keys in a table of their own, with a schema of their own.

The store lives in the mesh's database (the one configured under ``logger``: PostgreSQL at
``database_url``, else the SQLite file at ``sqlite_path``), next to the request log but apart from
it: its own tables, its own migrations (keys/migrations) and version table
(``api_key_schema_version``), applied by the common migration runner (common/database.py). It
touches nothing of the logger's.
"""

from __future__ import annotations

import abc
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from hybridinference.common.database import Schema
from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.settings import LoggerSettings
from hybridinference.keys.model import ApiKey

COLUMNS = "id, name, key_hash, prefix, admin, models, limits, created_at, revoked_at"


class KeyStoreError(Exception):
    """The key store could not be opened, migrated or queried; the message says why."""


SCHEMA = Schema(
    name="api keys",
    directory=Path(__file__).resolve().parent / "migrations",
    version_table="api_key_schema_version",
    lock_id=0x4869_4B65_7901,
    error=KeyStoreError,
)


class KeyStore(abc.ABC):
    @abc.abstractmethod
    async def insert(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""

    @abc.abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Marks the key revoked; False when no active key has this id."""

    @abc.abstractmethod
    async def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool:
        """Replaces an active key's limits; False when no active key has this id."""

    @abc.abstractmethod
    async def fingerprint(self) -> tuple[int, int]:
        """Changes whenever any key is added or revoked (cheap: no key material is read)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def active_keys(self) -> list[ApiKey]:
        return await self.list_keys(include_revoked=False)


def row_to_key(row: tuple[Any, ...], parse_time: Any = None) -> ApiKey:
    """A row in COLUMNS order → ApiKey; ``parse_time`` converts a dialect's timestamp."""
    key_id, name, key_hash, prefix, admin, models, limits, created_at, revoked_at = row

    def when(value: Any) -> datetime | None:
        if value is None:
            return None
        return parse_time(value) if parse_time else value  # type: ignore[no-any-return]

    return ApiKey(
        id=key_id,
        name=name,
        key_hash=key_hash,
        prefix=prefix,
        admin=bool(admin),
        models=tuple(orjson.loads(models)),
        limits=KeyLimitSettings.model_validate_json(limits),
        created_at=when(created_at),
        revoked_at=when(revoked_at),
    )


def models_json(key: ApiKey) -> str:
    return orjson.dumps(list(key.models)).decode()


def limits_json(key: ApiKey) -> str:
    return key.limits.model_dump_json(exclude_none=True)


async def open_key_store(settings: LoggerSettings) -> KeyStore:
    """The key table of the configured request-log database, created or upgraded if needed."""
    if settings.database_url:
        from hybridinference.keys.postgres import PostgresKeyStore

        return await PostgresKeyStore.open(settings.database_url)
    from hybridinference.keys.sqlite import SqliteKeyStore

    return await SqliteKeyStore.open(settings.sqlite_path)
