-- Fallbacks, hedging and optional content capture on each row; an hourly usage rollup per API key
-- and requested model, maintained by the logger in the same transaction as the rows it counts.
ALTER TABLE request_log ADD COLUMN fallbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN hedged BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE request_log ADD COLUMN prompt TEXT;
ALTER TABLE request_log ADD COLUMN response TEXT;

CREATE INDEX request_log_status_idx ON request_log (status, started_at DESC, request_id DESC);

CREATE TABLE usage_hourly (
    -- Start of the UTC hour.
    hour TIMESTAMPTZ NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, api_key_id, model)
);
CREATE INDEX usage_hourly_api_key_id_idx ON usage_hourly (api_key_id, hour);

-- Rows stored before this migration are counted once, here.
INSERT INTO usage_hourly
SELECT date_trunc('hour', started_at, 'UTC'), api_key_id, requested_model, count(*),
       count(*) FILTER (WHERE status <> 'OK'), coalesce(sum(prompt_tokens), 0),
       coalesce(sum(completion_tokens), 0), coalesce(sum(cached_tokens), 0),
       coalesce(sum(total_tokens), 0), coalesce(sum(cost_usd), 0)
FROM request_log
GROUP BY 1, 2, 3;
