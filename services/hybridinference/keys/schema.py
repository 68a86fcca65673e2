"""The key table's schema, versioned apart from the request log's migrations.

The key store lives in the same database as the request log but keeps its own bookkeeping table
(``api_key_schema_version``) so its versions never collide with the logger's ``schema_version``
sequence. Each step is applied in a transaction together with its version row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    postgres: tuple[str, ...]
    sqlite: tuple[str, ...]


VERSION_TABLE = "api_key_schema_version"

STEPS: tuple[Step, ...] = (
    Step(
        1,
        "api_key",
        postgres=(
            # A revision from a sequence on every insert and revoke: the sum of revisions (with
            # the row count) changes whenever any committed row changes, which is what gateways
            # poll to notice revocations without reading the whole table each time.
            "CREATE SEQUENCE api_key_revision_seq",
            """CREATE TABLE api_key (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                admin BOOLEAN NOT NULL DEFAULT FALSE,
                models TEXT NOT NULL DEFAULT '[]',
                limits TEXT NOT NULL DEFAULT '{}',
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                revoked_at TIMESTAMPTZ,
                revision BIGINT NOT NULL DEFAULT nextval('api_key_revision_seq')
            )""",
        ),
        sqlite=(
            """CREATE TABLE api_key (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                admin INTEGER NOT NULL DEFAULT 0,
                models TEXT NOT NULL DEFAULT '[]',
                limits TEXT NOT NULL DEFAULT '{}',
                created_at TEXT NOT NULL,
                revoked_at TEXT,
                revision INTEGER NOT NULL
            )""",
        ),
    ),
)
