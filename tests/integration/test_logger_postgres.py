"""The store behaviours of tests/unit/test_logger_store.py, against the real PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.logger.store import MigrationError, PostgresStore, StoreUnavailable
from services.logger.store.postgres import redact
from tests.integration.logger_pg import pg_database
from tests.unit.test_logger_store import (
    Backend,
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
    test_usage_rollup_counts_each_record_once,
    test_write_then_get_round_trips_every_field,
)

pytestmark = pytest.mark.postgres

__all__ = [
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

    return Backend(lambda: PostgresStore.open(pg_database), fetch)


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
