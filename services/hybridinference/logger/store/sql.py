"""SQL text shared by both dialects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hybridinference.logger.pagination import Cursor, ListFilters
from hybridinference.logger.rows import COLUMN_LIST


def list_query(
    filters: ListFilters,
    cursor: Cursor | None,
    limit: int,
    params: list[object],
    numbered: bool,
    db_time: Callable[[datetime], object],
) -> str:
    """The newest-first page query.

    Values are appended to ``params``; placeholders are ``$n`` when ``numbered`` (PostgreSQL),
    else ``?`` (SQLite). ``db_time`` turns a time into the dialect's own form.
    """

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}" if numbered else "?"

    where: list[str] = []
    for column, value in (
        ("requested_model", filters.model),
        ("provider", filters.provider),
        ("status", filters.status),
        ("api_key_id", filters.api_key_id),
        ("endpoint", filters.endpoint),
        ("client_request_id", filters.client_request_id),
    ):
        if value:
            where.append(f"{column} = {bind(value)}")
    if filters.errors_only:
        where.append("status <> 'OK'")
    if filters.start_time is not None:
        where.append(f"started_at >= {bind(db_time(filters.start_time))}")
    if filters.end_time is not None:
        where.append(f"started_at < {bind(db_time(filters.end_time))}")
    if cursor is not None:
        # Row-value comparison matches the (started_at DESC, request_id DESC) index order.
        where.append(
            f"(started_at, request_id) < "
            f"({bind(db_time(cursor.started_at))}, {bind(cursor.request_id)})"
        )
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return (
        f"SELECT {COLUMN_LIST} FROM request_log {clause}"
        f"ORDER BY started_at DESC, request_id DESC LIMIT {bind(limit)}"
    )


def traffic_query(numbered: bool) -> str:
    """The samples of a window, newest first (params: start, end, limit)."""
    one, two, three = ("$1", "$2", "$3") if numbered else ("?", "?", "?")
    return (
        "SELECT started_at, requested_model, status = 'OK', ttft_ms, latency_ms, "
        "COALESCE(completion_tokens, 0), COALESCE(total_tokens, 0), cost_usd FROM request_log "
        f"WHERE started_at >= {one} AND started_at < {two} "
        f"ORDER BY started_at DESC LIMIT {three}"
    )
