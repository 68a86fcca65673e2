"""Request-log stores: PostgreSQL when a database URL is configured, else embedded SQLite."""

from __future__ import annotations

from services.common.settings import LoggerSettings
from services.logger.store.base import (
    MigrationError,
    Page,
    RecordStore,
    StoreError,
    StoreUnavailable,
    WriteResult,
)
from services.logger.store.postgres import PostgresStore
from services.logger.store.sqlite import SqliteStore


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
    "StoreUnavailable",
    "WriteResult",
    "open_store",
]
