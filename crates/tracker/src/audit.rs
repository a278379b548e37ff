//! Recounts the read model from raw events and reports every difference.
//!
//! The read model is maintained incrementally (batch deltas, upserts); this is the slow,
//! obviously-correct recomputation it must always equal. Tests run it after crashes and
//! redeliveries; operators can run it after an incident (`GET /api/audit`).
use serde::Serialize;
use switchboard_store::Store;

use crate::Result;

/// Outcome of an [`audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Raw events stored.
    pub raw_events: i64,
    /// Events counted in the per-minute read model.
    pub counted_events: i64,
    /// Rows of `tracker_counts_minute` that differ from the recount (either side).
    pub minute_mismatches: i64,
    /// Rows of `tracker_subjects_day` that differ from the recount.
    pub subject_mismatches: i64,
    /// Rows of `tracker_objects_day` that differ from the recount.
    pub object_mismatches: i64,
}

impl Audit {
    /// Whether the read model equals the recount.
    pub fn is_consistent(&self) -> bool {
        self.raw_events == self.counted_events
            && self.minute_mismatches == 0
            && self.subject_mismatches == 0
            && self.object_mismatches == 0
    }
}

const RAW: &str = "SELECT COUNT(*) FROM tracker_events";
const COUNTED: &str = "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM tracker_counts_minute";
const MINUTES: &str = "(SELECT minute_ms, action, subject_type, count FROM tracker_counts_minute)";
const MINUTES_RECOUNT: &str = "(SELECT (ts_ms / 60000) * 60000 AS m, action, subject_type, \
     CAST(COUNT(*) AS BIGINT) AS n FROM tracker_events GROUP BY m, action, subject_type)";
const SUBJECTS: &str =
    "(SELECT day, action, subject_type, subject_id, count FROM tracker_subjects_day)";
const SUBJECTS_RECOUNT: &str = "(SELECT ts_ms / 86400000 AS d, action, subject_type, subject_id, \
     CAST(COUNT(*) AS BIGINT) AS n FROM tracker_events GROUP BY d, action, subject_type, subject_id)";
const OBJECTS: &str = "(SELECT day, object_type, object_id FROM tracker_objects_day)";
const OBJECTS_RECOUNT: &str =
    "(SELECT DISTINCT ts_ms / 86400000 AS d, object_type, object_id FROM tracker_events)";

/// `SELECT COUNT(*)` of the symmetric difference of two row sets.
fn symmetric_difference(a: &str, b: &str) -> String {
    format!(
        "SELECT (SELECT COUNT(*) FROM (SELECT * FROM {a} x EXCEPT SELECT * FROM {b} y) l) + \
         (SELECT COUNT(*) FROM (SELECT * FROM {b} x EXCEPT SELECT * FROM {a} y) r)"
    )
}

/// Recounts everything from `tracker_events` and compares.
///
/// # Errors
/// The store fails.
pub async fn audit(store: &Store) -> Result<Audit> {
    let queries = [
        RAW.to_owned(),
        COUNTED.to_owned(),
        symmetric_difference(MINUTES, MINUTES_RECOUNT),
        symmetric_difference(SUBJECTS, SUBJECTS_RECOUNT),
        symmetric_difference(OBJECTS, OBJECTS_RECOUNT),
    ];
    let mut n = [0i64; 5];
    for (slot, sql) in n.iter_mut().zip(&queries) {
        *slot = match store {
            Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        };
    }
    Ok(Audit {
        raw_events: n[0],
        counted_events: n[1],
        minute_mismatches: n[2],
        subject_mismatches: n[3],
        object_mismatches: n[4],
    })
}
