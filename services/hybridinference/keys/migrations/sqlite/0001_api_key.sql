-- API keys (hashed; the key itself is shown once, at creation). Timestamps are UTC ISO-8601
-- text; the store sets revision to one more than the highest on every insert and revoke.
-- The runner executes one statement at a time: keep each statement's final ';' at a line end.
CREATE TABLE api_key (
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
);
