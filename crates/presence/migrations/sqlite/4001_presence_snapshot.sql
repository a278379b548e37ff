-- One snapshot of the last-seen window per status replica: the users online at `taken_ms` with
-- their last-seen second, packed in `body` (see crates/presence/src/status/snapshot.rs).
CREATE TABLE IF NOT EXISTS presence_snapshot (
    replica  TEXT    PRIMARY KEY,
    taken_ms INTEGER NOT NULL,
    users    INTEGER NOT NULL,
    body     BLOB    NOT NULL
);
