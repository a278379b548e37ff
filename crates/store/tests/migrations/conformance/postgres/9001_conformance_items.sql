-- Conformance suite: rows written by concurrent writers; (writer, seq) catches duplicates.
CREATE TABLE conformance_items (
    id     BIGSERIAL PRIMARY KEY,
    writer BIGINT NOT NULL,
    seq    BIGINT NOT NULL,
    body   TEXT NOT NULL,
    UNIQUE (writer, seq)
);
