-- tracker (embedded engine). See docs/tracker.md for the model.

-- Journal of accepted requests in embedded mode (memory bus): the collector commits a row
-- here before answering 202; a worker folds rows into the tables below and deletes them in
-- the same transaction, so a crash at any point neither loses nor double-counts.
CREATE TABLE IF NOT EXISTS tracker_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    body       TEXT    NOT NULL,
    events     INTEGER NOT NULL,
    created_ms BIGINT  NOT NULL
);

-- Raw events, one row per accepted event; the id given at ingest makes folding idempotent.
CREATE TABLE IF NOT EXISTS tracker_events (
    id           TEXT   PRIMARY KEY,
    object_id    BIGINT NOT NULL,
    object_type  TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    subject_id   BIGINT NOT NULL,
    subject_type TEXT   NOT NULL,
    ts_ms        BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL
) WITHOUT ROWID;

-- Read model: events per minute × action × subject type.
CREATE TABLE IF NOT EXISTS tracker_counts_minute (
    minute_ms    BIGINT NOT NULL,
    action       TEXT   NOT NULL,
    subject_type TEXT   NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (minute_ms, action, subject_type)
) WITHOUT ROWID;

-- Read model: which objects were seen each day (unique objects per day = rows per day).
CREATE TABLE IF NOT EXISTS tracker_objects_day (
    day         BIGINT NOT NULL,
    object_type TEXT   NOT NULL,
    object_id   BIGINT NOT NULL,
    PRIMARY KEY (day, object_type, object_id)
) WITHOUT ROWID;

-- Read model: events per day × action × subject (top subjects).
CREATE TABLE IF NOT EXISTS tracker_subjects_day (
    day          BIGINT NOT NULL,
    action       TEXT   NOT NULL,
    subject_type TEXT   NOT NULL,
    subject_id   BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (day, action, subject_type, subject_id)
) WITHOUT ROWID;
