"""The store behaviours of tests/unit/test_logger_store.py, against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from hybridinference.common.database import redact
from hybridinference.logger.store import (
    MigrationError,
    PostgresStore,
    RecordStore,
    StoreUnavailable,
    WriteResult,
)
from hybridinference.logger.store.base import SCHEMA
from hybridinference.logger.usage import UsageQuery
from support.logger_records import BASE_SECONDS, make_record
from tests.integration.logger_pg import pg_database
from tests.unit.test_logger_store import (
    Backend,
    migrations,
    store,
    test_absent_usage_and_sampling_stay_absent,
    test_batch_of_many_records,
    test_duplicate_request_ids_are_stored_once,
    test_filtered_pagination,
    test_get_unknown_is_none,
    test_list_by_key_and_time_range,
    test_list_filters,
    test_list_pages_newest_first_without_gaps_or_repeats,
    test_migrations_are_recorded_and_idempotent,
    test_new_fields_round_trip,
    test_page_tokens_are_checked,
    test_traffic_buckets_per_model_and_the_new_filters,
    test_upgrade_keeps_rows_through_every_migration,
    test_upgrade_keeps_the_callers_id_apart_from_the_key,
    test_usage_rollup_counts_each_record_once,
    test_write_then_get_round_trips_every_field,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "migrations",
    "pg_database",
    "store",
    "test_absent_usage_and_sampling_stay_absent",
    "test_batch_of_many_records",
    "test_duplicate_request_ids_are_stored_once",
    "test_filtered_pagination",
    "test_get_unknown_is_none",
    "test_list_by_key_and_time_range",
    "test_list_filters",
    "test_list_pages_newest_first_without_gaps_or_repeats",
    "test_migrations_are_recorded_and_idempotent",
    "test_new_fields_round_trip",
    "test_page_tokens_are_checked",
    "test_traffic_buckets_per_model_and_the_new_filters",
    "test_upgrade_keeps_rows_through_every_migration",
    "test_upgrade_keeps_the_callers_id_apart_from_the_key",
    "test_usage_rollup_counts_each_record_once",
    "test_write_then_get_round_trips_every_field",
]


@pytest.fixture
def backend(pg_database: str) -> Backend:
    async def fetch(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(pg_database)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def columns() -> list[str]:
        rows = await fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'request_log'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        return [str(row[0]) for row in rows]

    def open_at(version: str) -> Awaitable[RecordStore]:
        older = [m for m in SCHEMA.migrations("postgres") if m.name[:4] <= version]
        return PostgresStore.open(pg_database, older)

    return Backend(lambda: PostgresStore.open(pg_database), fetch, columns, open_at)


async def test_schema_uses_jsonb_and_indexes(backend: Backend) -> None:
    opened = await backend.open()
    await opened.close()
    types = dict(
        await backend.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'request_log'"
        )
    )
    assert types["sampling"] == "jsonb" and types["metadata"] == "jsonb"
    assert types["started_at"] == "timestamp with time zone"
    indexes = {
        row[0]
        for row in await backend.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'request_log'"
        )
    }
    for column in ("started_at", "requested_model", "provider", "api_key_id"):
        assert f"request_log_{column}_idx" in indexes


async def test_failed_migration_is_a_clear_error(pg_database: str) -> None:
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute("CREATE TABLE request_log (x INTEGER)")
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="0001_request_log failed"):
        await PostgresStore.open(pg_database)
    conn = await asyncpg.connect(pg_database)
    try:
        # The whole transaction rolled back: nothing recorded, the foreign table untouched.
        recorded = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        assert not recorded or await conn.fetchval("SELECT count(*) FROM schema_version") == 0
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'request_log'"
        )
        assert [c[0] for c in columns] == ["x"]
    finally:
        await conn.close()


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
        await PostgresStore.open("postgresql://postgres@127.0.0.1:5432/hi_logger_no_such_db")


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_replays_are_merged_and_fresh_batches_copied_directly(pg_database: str) -> None:
    store = await PostgresStore.open(pg_database)
    try:
        assert await store.write_batch([make_record(i) for i in range(10)]) == WriteResult(10, 0)
        assert store._direct
        # Five of these are stored: the direct COPY fails as a whole and the merge takes over.
        mixed = [make_record(i) for i in range(5, 15)]
        assert await store.write_batch(mixed) == WriteResult(5, 5)
        assert not store._direct
        assert await store.write_batch(mixed) == WriteResult(0, 10)
        # Merged without a duplicate: the next batch goes straight into request_log again.
        assert await store.write_batch([make_record(i) for i in range(15, 20)]) == WriteResult(5, 0)
        assert store._direct
        start = datetime.fromtimestamp(BASE_SECONDS, UTC)
        usage = await store.usage(UsageQuery.covering(start, start + timedelta(days=1)))
        assert sum(b.totals.requests for b in usage) == 20
        assert sum(b.totals.prompt_tokens for b in usage) == sum(10 + i for i in range(20))
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM request_log") == 20
    finally:
        await conn.close()
