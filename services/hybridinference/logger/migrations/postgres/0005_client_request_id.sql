-- The caller's x-request-id gets a column of its own: request_id becomes a key the gateway makes
-- unique, so two requests sent with the same id are two rows. Rows stored before keep '' here
-- (their request_id was the caller's id, and `hybridinference logs ID` looks up both columns).
-- A constant default needs no table rewrite.
ALTER TABLE request_log ADD COLUMN client_request_id TEXT NOT NULL DEFAULT '';

CREATE INDEX request_log_client_request_id_idx ON request_log (client_request_id, started_at DESC, request_id DESC);
