-- One row per request the gateway served. Column names follow logger.v1.RequestRecord.
CREATE TABLE request_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    started_at TIMESTAMPTZ NOT NULL,
    surface TEXT NOT NULL DEFAULT '',
    api_key_id TEXT NOT NULL DEFAULT '',
    "user" TEXT NOT NULL DEFAULT '',
    requested_model TEXT NOT NULL DEFAULT '',
    served_model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    endpoint TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    status TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    ttft_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    -- NULL token counts mean the record carried no usage at all (not "zero tokens").
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    total_tokens INTEGER,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    finish_reason TEXT NOT NULL DEFAULT 'FINISH_REASON_UNSPECIFIED',
    sampling JSONB,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- When the logger stored the row; started_at is when the gateway received the request.
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Listing is newest first with an (started_at, request_id) keyset, optionally filtered by one
-- column; each index leads with the filter column so a filtered page is an index range scan.
CREATE INDEX request_log_started_at_idx ON request_log (started_at DESC, request_id DESC);
CREATE INDEX request_log_requested_model_idx
    ON request_log (requested_model, started_at DESC, request_id DESC);
CREATE INDEX request_log_provider_idx ON request_log (provider, started_at DESC, request_id DESC);
CREATE INDEX request_log_api_key_id_idx
    ON request_log (api_key_id, started_at DESC, request_id DESC);
