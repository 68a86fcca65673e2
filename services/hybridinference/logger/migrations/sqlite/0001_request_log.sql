-- One row per request the gateway served. Column names follow logger.v1.RequestRecord and match
-- the PostgreSQL schema; started_at/received_at are fixed-width UTC ISO-8601 text
-- ('YYYY-MM-DDTHH:MM:SS.ffffffZ'), which sorts in time order, and JSON columns are TEXT.
-- The runner executes one statement at a time: keep each statement's final ';' at a line end.
CREATE TABLE request_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    surface TEXT NOT NULL DEFAULT '',
    api_key_id TEXT NOT NULL DEFAULT '',
    "user" TEXT NOT NULL DEFAULT '',
    requested_model TEXT NOT NULL DEFAULT '',
    served_model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    endpoint TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    stream INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    ttft_ms REAL NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0,
    -- NULL token counts mean the record carried no usage at all (not "zero tokens").
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    total_tokens INTEGER,
    cost_usd REAL NOT NULL DEFAULT 0,
    finish_reason TEXT NOT NULL DEFAULT 'FINISH_REASON_UNSPECIFIED',
    sampling TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Each index leads with its filter column so a filtered newest-first page is a range scan.
CREATE INDEX request_log_started_at_idx ON request_log (started_at DESC, request_id DESC);
CREATE INDEX request_log_requested_model_idx
    ON request_log (requested_model, started_at DESC, request_id DESC);
CREATE INDEX request_log_provider_idx ON request_log (provider, started_at DESC, request_id DESC);
CREATE INDEX request_log_api_key_id_idx
    ON request_log (api_key_id, started_at DESC, request_id DESC);
