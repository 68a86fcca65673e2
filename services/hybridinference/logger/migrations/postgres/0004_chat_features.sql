-- The chat surface on each row: reasoning tokens, the tools offered and called, the features used
-- (JSON arrays of strings).
ALTER TABLE request_log ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE request_log ADD COLUMN tools_offered JSONB NOT NULL DEFAULT '[]';
ALTER TABLE request_log ADD COLUMN tools_called JSONB NOT NULL DEFAULT '[]';
ALTER TABLE request_log ADD COLUMN features JSONB NOT NULL DEFAULT '[]';
