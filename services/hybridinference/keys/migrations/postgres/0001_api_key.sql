-- API keys (hashed; the key itself is shown once, at creation). A revision from a sequence on
-- every insert and revoke: the sum of revisions (with the row count) changes whenever any
-- committed row changes, which is what gateways poll to notice revocations without reading the
-- whole table each time.
CREATE SEQUENCE api_key_revision_seq;
CREATE TABLE api_key (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    models TEXT NOT NULL DEFAULT '[]',
    limits TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ,
    revision BIGINT NOT NULL DEFAULT nextval('api_key_revision_seq')
);
