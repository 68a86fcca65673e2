-- The request's trace id (its W3C traceparent, "" when tracing was off) and the time it spent at
-- the router before the attempt that served it (admission wait, failed attempts, backoff), so a
-- request's page can show both. Constant defaults need no table rewrite.
ALTER TABLE request_log ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
ALTER TABLE request_log ADD COLUMN queue_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
