-- Fallbacks, hedging and optional content capture on each row; an hourly usage rollup per API key
-- and requested model (same as PostgreSQL; hour is 'YYYY-MM-DDTHH:00:00.000000Z' text).
ALTER TABLE request_log ADD COLUMN fallbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN hedged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN prompt TEXT;
ALTER TABLE request_log ADD COLUMN response TEXT;

CREATE INDEX request_log_status_idx ON request_log (status, started_at DESC, request_id DESC);

CREATE TABLE usage_hourly (
    hour TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, api_key_id, model)
);
CREATE INDEX usage_hourly_api_key_id_idx ON usage_hourly (api_key_id, hour);

INSERT INTO usage_hourly
SELECT substr(started_at, 1, 13) || ':00:00.000000Z', api_key_id, requested_model, count(*),
       sum(status <> 'OK'), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
       coalesce(sum(cached_tokens), 0), coalesce(sum(total_tokens), 0), coalesce(sum(cost_usd), 0)
FROM request_log
GROUP BY 1, 2, 3;
