"""Store behaviours, run here against SQLite and by tests/integration/test_logger_postgres.py
against PostgreSQL (it imports these tests and provides its own ``backend`` fixture)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hybridinference.logger.pagination import InvalidPageToken, ListFilters
from hybridinference.logger.rows import COLUMNS, record_to_row
from hybridinference.logger.store import MigrationError, RecordStore, SqliteStore
from hybridinference.logger.store.base import SCHEMA
from hybridinference.logger.store.sqlite import iso_utc
from hybridinference.logger.traffic import TrafficQuery
from hybridinference.logger.usage import UsageQuery
from hybridinference.logger.v1 import logger_pb2
from support.logger_records import BASE_SECONDS, MODELS, make_record


@dataclass
class Backend:
    open: Callable[[], Awaitable[RecordStore]]
    fetch: Callable[[str], Awaitable[list[tuple[Any, ...]]]]
    # request_log's column names in table order.
    columns: Callable[[], Awaitable[list[str]]]
    # Opens the store with only the migrations up to and including the given version prefix.
    open_at: Callable[[str], Awaitable[RecordStore]]


@pytest.fixture
def migrations(backend: Backend) -> Callable[[str], Awaitable[RecordStore]]:
    return backend.open_at


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    path = tmp_path / "nested" / "dir" / "requests.db"

    async def fetch(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return list(db.execute(sql).fetchall())

    async def columns() -> list[str]:
        return [str(row[1]) for row in await fetch("PRAGMA table_info(request_log)")]

    def open_at(version: str) -> Awaitable[RecordStore]:
        older = [m for m in SCHEMA.migrations("sqlite") if m.name[:4] <= version]
        return SqliteStore.open(str(path), older)

    return Backend(lambda: SqliteStore.open(str(path)), fetch, columns, open_at)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[RecordStore]:
    opened = await backend.open()
    yield opened
    await opened.close()


async def test_migrations_are_recorded_and_idempotent(backend: Backend) -> None:
    for _ in range(2):
        opened = await backend.open()
        await opened.close()
    rows = await backend.fetch("SELECT version, name FROM schema_version")
    assert rows == [
        (1, "0001_request_log"),
        (2, "0002_capture_and_usage"),
        (3, "0003_drop_row_id"),
        (4, "0004_chat_features"),
        (5, "0005_client_request_id"),
        (6, "0006_trace_and_queue"),
    ]


async def test_upgrade_keeps_rows_through_every_migration(
    backend: Backend, migrations: Callable[[str], Awaitable[RecordStore]]
) -> None:
    """A database at 0001 with rows in it (written as that schema's code wrote them): 0002
    rolls their usage up, 0003 drops the unused id column, 0004 adds the chat columns, 0005 the
    caller's id; every row is kept, and both dialects end with the same columns."""
    older = await migrations("0001")
    await older.close()
    records = [make_record(i, client_request_id="") for i in range(30)]
    for record in records:
        # What 0001 cannot hold comes back as its default.
        record.usage.reasoning_tokens = 0
        del record.tools_offered[:], record.tools_called[:], record.features[:]
        record.traceparent, record.queue_ms = "", 0.0
        await backend.fetch(_insert_at_0001(record))
    opened = await backend.open()
    try:
        for record in records:
            assert await opened.get(record.request_id) == record
        assert (await opened.write_batch(records)).inserted == 0
        start = datetime.fromtimestamp(BASE_SECONDS, UTC)
        usage = await opened.usage(UsageQuery.covering(start, start + timedelta(days=1)))
        assert sum(b.totals.requests for b in usage) == 30
    finally:
        await opened.close()
    versions = await backend.fetch("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,)]
    assert await backend.columns() == [*COLUMNS[:23], "received_at", *COLUMNS[23:]]


def _insert_at_0001(record: logger_pb2.RequestRecord) -> str:
    """The record as an INSERT of the 0001 schema's 23 columns, in SQL both dialects read."""
    row = record_to_row(record)[:23]

    def literal(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, datetime):
            value = iso_utc(value)
        return "'" + str(value).replace("'", "''") + "'"

    columns = ", ".join(f'"{name}"' for name in COLUMNS[:23])
    return f"INSERT INTO request_log ({columns}) VALUES ({', '.join(map(literal, row))})"


async def test_upgrade_keeps_the_callers_id_apart_from_the_key(
    backend: Backend, migrations: Callable[[str], Awaitable[RecordStore]]
) -> None:
    """A database at 0004 with rows: after 0005 they are found by key as before (their key was
    the caller's id), with no client id; new records sharing a caller's id are separate rows
    found by that id, in pages like any other filter."""
    older = await migrations("0004")
    await older.close()
    old = [make_record(i, client_request_id="") for i in range(5)]
    for record in old:
        record.usage.reasoning_tokens = 0
        del record.tools_offered[:], record.tools_called[:], record.features[:]
        record.traceparent, record.queue_ms = "", 0.0
        await backend.fetch(_insert_at_0001(record))
    opened = await backend.open()
    try:
        for record in old:
            assert await opened.get(record.request_id) == record
        shared = [make_record(10 + i, client_request_id="client-same") for i in range(3)]
        assert (await opened.write_batch(shared)).inserted == 3
        page = await opened.list(ListFilters(client_request_id="client-same"), 2)
        assert [r.request_id for r in page.records] == ["req-00012", "req-00011"]
        assert page.next_page_token
        rest = await opened.list(
            ListFilters(client_request_id="client-same"), 2, page.next_page_token
        )
        assert [r.request_id for r in rest.records] == ["req-00010"]
        assert {r.client_request_id for r in [*page.records, *rest.records]} == {"client-same"}
    finally:
        await opened.close()


async def test_write_then_get_round_trips_every_field(store: RecordStore) -> None:
    record = make_record(7)
    result = await store.write_batch([record])
    assert (result.inserted, result.duplicates) == (1, 0)
    assert await store.get(record.request_id) == record


async def test_absent_usage_and_sampling_stay_absent(store: RecordStore) -> None:
    record = make_record(1)
    record.ClearField("usage")
    record.ClearField("sampling")
    record.metadata.clear()
    await store.write_batch([record])
    got = await store.get(record.request_id)
    assert got == record
    assert got is not None and not got.HasField("usage") and not got.HasField("sampling")


async def test_get_unknown_is_none(store: RecordStore) -> None:
    assert await store.get("nope") is None


async def test_duplicate_request_ids_are_stored_once(store: RecordStore) -> None:
    a, b = make_record(1), make_record(2)
    first = await store.write_batch([a, a, b])
    assert (first.inserted, first.duplicates) == (2, 1)
    replay = await store.write_batch([b, a])
    assert (replay.inserted, replay.duplicates) == (0, 2)
    page = await store.list(ListFilters(), 50)
    assert [r.request_id for r in page.records] == [b.request_id, a.request_id]


async def test_list_pages_newest_first_without_gaps_or_repeats(store: RecordStore) -> None:
    records = [make_record(i) for i in range(25)]
    # Equal start times: the request id breaks the tie, so the keyset must include it.
    records += [
        make_record(100 + i, started_at_seconds=records[10].started_at.seconds) for i in range(3)
    ]
    await store.write_batch(records)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await store.list(ListFilters(), 10, token)
        pages += 1
        seen += [r.request_id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    expected = sorted(records, key=lambda r: (r.started_at.seconds, r.request_id), reverse=True)
    assert seen == [r.request_id for r in expected]
    assert pages == 3


async def test_list_filters(store: RecordStore) -> None:
    records = [make_record(i) for i in range(30)]
    await store.write_batch(records)

    async def ids(filters: ListFilters) -> set[str]:
        return {r.request_id for r in (await store.list(filters, 1000)).records}

    def want(pred: Callable[[logger_pb2.RequestRecord], bool]) -> set[str]:
        return {r.request_id for r in records if pred(r)}

    assert await ids(ListFilters(model="gpt-x")) == want(lambda r: r.requested_model == "gpt-x")
    assert await ids(ListFilters(provider="vllm")) == want(lambda r: r.provider == "vllm")
    assert await ids(ListFilters(status="UNAVAILABLE")) == want(lambda r: r.status != "OK")
    both = ListFilters(model="hi-sim", provider="sim")
    assert await ids(both) == want(lambda r: r.requested_model == "hi-sim" and r.provider == "sim")
    assert await ids(ListFilters(model="unknown")) == set()


async def test_filtered_pagination(store: RecordStore) -> None:
    await store.write_batch([make_record(i) for i in range(40)])
    filters = ListFilters(model="hi-sim")
    first = await store.list(filters, 7)
    second = await store.list(filters, 7, first.next_page_token)
    assert all(r.requested_model == "hi-sim" for r in first.records + second.records)
    assert first.records[-1].started_at.seconds > second.records[0].started_at.seconds


async def test_page_tokens_are_checked(store: RecordStore) -> None:
    await store.write_batch([make_record(i) for i in range(5)])
    page = await store.list(ListFilters(model="hi-sim"), 1)
    with pytest.raises(InvalidPageToken, match="different filters"):
        await store.list(ListFilters(model="gpt-x"), 1, page.next_page_token)
    with pytest.raises(InvalidPageToken):
        await store.list(ListFilters(), 1, "not-a-token!")


async def test_batch_of_many_records(store: RecordStore) -> None:
    result = await store.write_batch([make_record(i) for i in range(1500)])
    assert result.inserted == 1500
    assert len((await store.list(ListFilters(), 1000)).records) == 1000


# SQLite-only checks (not imported by the PostgreSQL module).


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await SqliteStore.open(str(path))
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_failed_migration_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE request_log (x INTEGER)")
    with pytest.raises(MigrationError, match="0001_request_log failed"):
        await SqliteStore.open(str(path))
    with sqlite3.connect(path) as db:
        # Rolled back as a whole: not recorded, the foreign table untouched.
        assert db.execute("SELECT count(*) FROM schema_version").fetchone() == (0,)
        assert [c[1] for c in db.execute("PRAGMA table_info(request_log)")] == ["x"]


async def test_usage_rollup_counts_each_record_once(store: RecordStore) -> None:
    day = 86_400
    base = 1_750_032_000  # a UTC midnight
    batch = [
        make_record(i, started_at_seconds=base + (i % 3) * day + i * 60, api_key_id=f"k{i % 2}")
        for i in range(30)
    ]
    await store.write_batch(batch[:20])
    # The second batch replays ten records: the rollup must not count them again.
    await store.write_batch(batch[10:])
    start = datetime.fromtimestamp(base, UTC)
    buckets = await store.usage(UsageQuery.covering(start, start + timedelta(days=3)))
    want: dict[tuple[int, str, str], list[float]] = {}
    for record in batch:
        key = ((record.started_at.seconds - base) // day, record.api_key_id, record.requested_model)
        totals = want.setdefault(key, [0, 0, 0, 0, 0.0])
        totals[0] += 1
        totals[1] += record.status != "OK"
        totals[2] += record.usage.prompt_tokens
        totals[3] += record.usage.total_tokens
        totals[4] += record.cost_usd
    got = {
        (int((b.day - start).total_seconds()) // day, b.api_key_id, b.model): [
            b.totals.requests,
            b.totals.errors,
            b.totals.prompt_tokens,
            b.totals.total_tokens,
            pytest.approx(b.totals.cost_usd),
        ]
        for b in buckets
    }
    assert got == want
    assert [b.day for b in buckets] == sorted(b.day for b in buckets)
    only = await store.usage(
        UsageQuery.covering(start, start + timedelta(days=3), api_key_id="k1", model="gpt-x")
    )
    assert only and all((b.api_key_id, b.model) == ("k1", "gpt-x") for b in only)
    assert sum(b.totals.requests for b in only) == sum(
        1 for r in batch if (r.api_key_id, r.requested_model) == ("k1", "gpt-x")
    )


async def test_list_by_key_and_time_range(store: RecordStore) -> None:
    await store.write_batch([make_record(i) for i in range(30)])
    start = datetime.fromtimestamp(BASE_SECONDS + 10, UTC)
    end = datetime.fromtimestamp(BASE_SECONDS + 20, UTC)
    filters = ListFilters(api_key_id="key-1", start_time=start, end_time=end)
    page = await store.list(filters, 100)
    # started_at has .123456 s, so records 10..19 fall in [start, end).
    assert [r.request_id for r in page.records] == [
        f"req-{i:05d}" for i in range(19, 9, -1) if i % 3 == 1
    ]
    first = await store.list(filters, 2)
    with pytest.raises(InvalidPageToken):
        await store.list(ListFilters(api_key_id="key-1"), 2, first.next_page_token)


async def test_new_fields_round_trip(store: RecordStore) -> None:
    record = make_record(1, fallbacks=2, hedged=True, prompt="p", response="r")
    await store.write_batch([record])
    assert await store.get("req-00001") == record


async def test_traffic_buckets_per_model_and_the_new_filters(store: RecordStore) -> None:
    """GetTraffic's numbers from a store (SQLite here, PostgreSQL via its integration test)."""
    # 40 records one second apart: records 0..39 fall in buckets of 10 s, models alternate.
    records = [make_record(i) for i in range(40)]
    await store.write_batch(records)
    start = datetime.fromtimestamp(BASE_SECONDS, UTC)
    query = TrafficQuery.of(start, start + timedelta(seconds=40), 10)
    series, truncated = await store.traffic(query)
    assert not truncated and sorted(series) == sorted(MODELS)
    for model, traffic in series.items():
        assert len(traffic.buckets) == 4
        assert traffic.total.requests == sum(r.requested_model == model for r in records)
        for index, bucket in enumerate(traffic.buckets):
            mine = [r for r in records[index * 10 : index * 10 + 10] if r.requested_model == model]
            assert bucket.start == start + timedelta(seconds=10 * index)
            assert bucket.requests == len(mine)
            assert bucket.errors == sum(r.status != "OK" for r in mine)
            assert bucket.total_tokens == sum(r.usage.total_tokens for r in mine)
            assert bucket.cost_usd == pytest.approx(sum(r.cost_usd for r in mine))
            ttfts = sorted(r.ttft_ms for r in mine)
            assert bucket.ttft_p50_ms == ttfts[2]  # nearest rank of 5 samples
            assert bucket.ttft_p95_ms == ttfts[-1]
    failed = await store.list(ListFilters(endpoint="ep-0", errors_only=True), 100)
    expected = [r for r in records if r.endpoint == "ep-0" and r.status != "OK"]
    assert sorted(r.request_id for r in failed.records) == sorted(r.request_id for r in expected)
