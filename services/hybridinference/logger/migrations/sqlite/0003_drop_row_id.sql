-- Same as PostgreSQL: the unused "id" column goes. SQLite cannot drop a PRIMARY KEY column, so
-- the table is rebuilt with PostgreSQL's column order after its migration (the columns added by
-- 0002 come last) and the same indexes.
-- The runner executes one statement at a time: keep each statement's final ';' at a line end.
CREATE TABLE request_log_0003 (
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
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    total_tokens INTEGER,
    cost_usd REAL NOT NULL DEFAULT 0,
    finish_reason TEXT NOT NULL DEFAULT 'FINISH_REASON_UNSPECIFIED',
    sampling TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    fallbacks INTEGER NOT NULL DEFAULT 0,
    hedged INTEGER NOT NULL DEFAULT 0,
    prompt TEXT,
    response TEXT
);

INSERT INTO request_log_0003 (
    request_id, started_at, surface, api_key_id, "user", requested_model, served_model, provider,
    endpoint, attempts, stream, status, error, ttft_ms, latency_ms, prompt_tokens,
    completion_tokens, cached_tokens, total_tokens, cost_usd, finish_reason, sampling, metadata,
    received_at, fallbacks, hedged, prompt, response
)
SELECT
    request_id, started_at, surface, api_key_id, "user", requested_model, served_model, provider,
    endpoint, attempts, stream, status, error, ttft_ms, latency_ms, prompt_tokens,
    completion_tokens, cached_tokens, total_tokens, cost_usd, finish_reason, sampling, metadata,
    received_at, fallbacks, hedged, prompt, response
FROM request_log
ORDER BY id;

DROP TABLE request_log;

ALTER TABLE request_log_0003 RENAME TO request_log;

CREATE INDEX request_log_started_at_idx ON request_log (started_at DESC, request_id DESC);
CREATE INDEX request_log_requested_model_idx
    ON request_log (requested_model, started_at DESC, request_id DESC);
CREATE INDEX request_log_provider_idx ON request_log (provider, started_at DESC, request_id DESC);
CREATE INDEX request_log_api_key_id_idx
    ON request_log (api_key_id, started_at DESC, request_id DESC);
CREATE INDEX request_log_status_idx ON request_log (status, started_at DESC, request_id DESC);
