-- The identity column "id" was never read (rows are found by request_id and listed by
-- (started_at, request_id)), yet every insert drew a sequence value and maintained its primary
-- key index. Dropping it is a catalog change: no table rewrite, and its index goes with it.
ALTER TABLE request_log DROP COLUMN id;
