"""Request-log stores: PostgreSQL when a database URL is configured, else embedded SQLite."""

from __future__ import annotations

from hybridinference.common.settings import LoggerSettings
from hybridinference.logger.store.base import (
    MigrationError,
    Page,
    RecordStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    WriteResult,
)
from hybridinference.logger.store.postgres import PostgresStore
from hybridinference.logger.store.sqlite import SqliteStore


async def open_store(settings: LoggerSettings) -> RecordStore:
    """Opens the configured store and brings its schema up to date.

    Raises MigrationError or StoreUnavailable with a message naming the database.
    """
    if settings.database_url:
        return await PostgresStore.open(settings.database_url)
    return await SqliteStore.open(settings.sqlite_path)


__all__ = [
    "MigrationError",
    "Page",
    "PostgresStore",
    "RecordStore",
    "SqliteStore",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "WriteResult",
    "open_store",
]
