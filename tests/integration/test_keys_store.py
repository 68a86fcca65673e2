"""The key store on both databases: create, list, revoke, change detection, coexisting schemas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.settings import LoggerSettings
from hybridinference.gateway.auth import KeyCache
from hybridinference.gateway.key_refresh import KeyRefresher
from hybridinference.keys.issue import create_key
from hybridinference.keys.store import KeyStore, open_key_store
from hybridinference.logger.store import open_store
from support.procs import REPO
from tests.integration.logger_pg import ADMIN_DSN, dsn_for, pg_database

__all__ = ["pg_database"]
SECRET = b"integration-secret-0123456789"
KEYS_SQLITE = REPO / "services" / "hybridinference" / "keys" / "migrations" / "sqlite"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LoggerSettings]:
    if request.param == "sqlite":
        yield LoggerSettings(port=0, sqlite_path=str(tmp_path / "db" / "requests.db"))
        return
    # A throwaway database like logger_pg.pg_database (an async fixture cannot be requested
    # conditionally, so it is made here).
    name = f"hi_keys_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield LoggerSettings(port=0, database_url=dsn_for(name))
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def store(settings: LoggerSettings) -> AsyncIterator[KeyStore]:
    opened = await open_key_store(settings)
    try:
        yield opened
    finally:
        await opened.close()


async def test_create_list_revoke(store: KeyStore) -> None:
    limits = KeyLimitSettings(requests_per_minute=5, daily_budget_usd=1.5)
    key, plain = await create_key(store, SECRET, "alice", models=("hi-sim",), limits=limits)
    admin, _ = await create_key(store, SECRET, "ops", admin=True)
    listed = await store.list_keys()
    assert [k.id for k in listed] == [key.id, admin.id]
    stored = listed[0]
    assert stored.name == "alice" and stored.models == ("hi-sim",) and stored.limits == limits
    assert stored.prefix == plain[:10] and plain not in stored.key_hash
    assert stored.created_at is not None and stored.active and listed[1].admin

    assert await store.revoke(key.id)
    assert not await store.revoke(key.id)
    assert not await store.revoke("key_unknown")
    assert [k.id for k in await store.active_keys()] == [admin.id]
    revoked = next(k for k in await store.list_keys() if k.id == key.id)
    assert revoked.revoked_at is not None


async def test_fingerprint_changes_on_every_write(store: KeyStore) -> None:
    seen = {await store.fingerprint()}
    key, _ = await create_key(store, SECRET, "a")
    seen.add(await store.fingerprint())
    await create_key(store, SECRET, "b")
    seen.add(await store.fingerprint())
    await store.revoke(key.id)
    seen.add(await store.fingerprint())
    assert len(seen) == 4


async def test_schema_is_idempotent_and_apart_from_the_request_log(
    settings: LoggerSettings,
) -> None:
    # The logger's migrations and the key store's schema steps share one database in any order.
    first = await open_key_store(settings)
    await create_key(first, SECRET, "kept")
    log_store = await open_store(settings)
    again = await open_key_store(settings)
    try:
        assert [k.name for k in await again.list_keys()] == ["kept"]
    finally:
        await log_store.close()
        await again.close()
        await first.close()


async def test_refresher_sees_revocations(store: KeyStore) -> None:
    key, plain = await create_key(store, SECRET, "r")
    cache = KeyCache(SECRET)
    refresher = KeyRefresher(store, cache, interval_s=0.05)
    await refresher.load()
    assert cache.lookup(plain) is not None
    assert not await refresher.refresh_once()
    await store.revoke(key.id)
    assert await refresher.refresh_once()
    assert cache.lookup(plain) is None


@pytest.mark.postgres
async def test_concurrent_first_opens_apply_the_schema_once(pg_database: str) -> None:
    settings = LoggerSettings(port=0, database_url=pg_database)
    stores = await asyncio.gather(*(open_key_store(settings) for _ in range(4)))
    for opened in stores:
        await opened.close()
    conn = await asyncpg.connect(pg_database)
    try:
        versions = await conn.fetch("SELECT version FROM api_key_schema_version")
    finally:
        await conn.close()
    assert [row["version"] for row in versions] == [1]


async def test_a_database_from_the_former_key_schema_runner_opens_unchanged(
    tmp_path: Path,
) -> None:
    # Before keys used the common migration runner, their version table had no default for
    # applied_at and step 1 was named "api_key": such a database opens as it is, keys intact.

    path = tmp_path / "requests.db"
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE api_key_schema_version (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        await db.execute(
            "INSERT INTO api_key_schema_version VALUES (1, 'api_key', '2026-01-01T00:00:00')"
        )
        await db.executescript((KEYS_SQLITE / "0001_api_key.sql").read_text())
        await db.commit()
    store = await open_key_store(LoggerSettings(port=0, sqlite_path=str(path)))
    try:
        await create_key(store, SECRET, "kept")
        assert [k.name for k in await store.list_keys()] == ["kept"]
    finally:
        await store.close()
    async with (
        aiosqlite.connect(path) as db,
        db.execute("SELECT version, name FROM api_key_schema_version") as cursor,
    ):
        assert list(await cursor.fetchall()) == [(1, "api_key")]
