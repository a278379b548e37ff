-- Store bookkeeping shared by every service: small named values (e.g. checkpoints).
CREATE TABLE IF NOT EXISTS store_meta (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
