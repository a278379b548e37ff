//! The write side of the CQRS split: stores raw events and folds them into the read model,
//! inside the caller's transaction.
//!
//! Idempotence comes from the raw table: `INSERT … ON CONFLICT (id) DO NOTHING RETURNING id`
//! tells which events are new, and only those are counted. A redelivered batch (worker killed
//! after commit but before ack), or a client's retry of events labelled with a `messageId`
//! (whose ids derive from it), therefore changes nothing. Aggregation happens in memory per
//! batch first, so the upserts touch one row per distinct key, not one per event.
//!
//! Both engines run the same SQL; the body is instantiated once per sqlx driver by a macro
//! (bind placeholders differ, the statements do not).
use std::collections::{HashMap, HashSet};

use crate::event::Event;

/// Raw rows per `INSERT` (8 binds each, well under both engines' bind limits).
const RAW_CHUNK: usize = 1000;
/// Read-model rows per upsert.
const UPSERT_CHUNK: usize = 1000;
const MINUTE_MS: i64 = 60_000;
/// Length of a day in milliseconds (days are UTC).
pub const DAY_MS: i64 = 86_400_000;

/// Read-model deltas of one batch, keyed like the tables.
#[derive(Default)]
pub(crate) struct Deltas<'a> {
    minutes: HashMap<(i64, &'a str, &'a str), i64>,
    objects: HashSet<(i64, &'a str, i64)>,
    subjects: HashMap<(i64, &'a str, &'a str, i64), i64>,
}

impl<'a> Deltas<'a> {
    /// The deltas of all `events`, as if every one were new. Computed before the write
    /// transaction, they keep the aggregation out of SQLite's single-writer section.
    pub(crate) fn of(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut d = Self::default();
        for e in events {
            d.add(e);
        }
        d
    }

    fn add(&mut self, e: &'a Event) {
        let minute = e.ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let day = e.ts_ms.div_euclid(DAY_MS);
        *self.minutes.entry((minute, &e.action, &e.subject_type)).or_default() += 1;
        self.objects.insert((day, &e.object_type, e.object_id));
        *self.subjects.entry((day, &e.action, &e.subject_type, e.subject_id)).or_default() += 1;
    }
}

macro_rules! fold_for {
    ($db:ty) => {
        use sqlx::QueryBuilder;

        use super::{Deltas, RAW_CHUNK, UPSERT_CHUNK};
        use crate::event::Event;

        /// Inserts `events` (skipping ids already stored) and folds the new ones into the
        /// read model. Returns how many were new. `all_new` are the deltas of all `events`
        /// when the caller computed them already; they are used only if no event was stored
        /// before (otherwise the deltas are recomputed from the new events alone).
        pub(crate) async fn fold<'a>(
            conn: &mut <$db as sqlx::Database>::Connection,
            events: &'a [Event],
            all_new: Option<Deltas<'a>>,
        ) -> sqlx::Result<u64> {
            let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
            for chunk in events.chunks(RAW_CHUNK) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO tracker_events (id, object_id, object_type, action, subject_id, \
                     subject_type, ts_ms, received_ms) ",
                );
                qb.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.id)
                        .push_bind(e.object_id)
                        .push_bind(&e.object_type)
                        .push_bind(&e.action)
                        .push_bind(e.subject_id)
                        .push_bind(&e.subject_type)
                        .push_bind(e.ts_ms)
                        .push_bind(e.received_ms);
                });
                qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *conn).await?;
                if ids.len() == chunk.len() {
                    fresh.extend(chunk);
                } else {
                    // Taken out as matched: a chunk may hold one id twice (a client's
                    // messageId repeated within a batch), and only one copy was stored.
                    let mut ids: std::collections::HashSet<String> = ids.into_iter().collect();
                    fresh.extend(chunk.iter().filter(|e| ids.remove(&e.id)));
                }
            }
            let d = match all_new {
                Some(d) if fresh.len() == events.len() => d,
                _ => Deltas::of(fresh.iter().copied()),
            };
            let minutes: Vec<_> = d.minutes.into_iter().collect();
            for chunk in minutes.chunks(UPSERT_CHUNK) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO tracker_counts_minute (minute_ms, action, subject_type, count) ",
                );
                qb.push_values(chunk, |mut row, ((m, a, s), n)| {
                    row.push_bind(*m).push_bind(*a).push_bind(*s).push_bind(*n);
                });
                qb.push(
                    " ON CONFLICT (minute_ms, action, subject_type) DO UPDATE \
                     SET count = tracker_counts_minute.count + excluded.count",
                );
                qb.build().execute(&mut *conn).await?;
            }
            let objects: Vec<_> = d.objects.into_iter().collect();
            for chunk in objects.chunks(UPSERT_CHUNK) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO tracker_objects_day (day, object_type, object_id) ",
                );
                qb.push_values(chunk, |mut row, (day, t, id)| {
                    row.push_bind(*day).push_bind(*t).push_bind(*id);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                qb.build().execute(&mut *conn).await?;
            }
            let subjects: Vec<_> = d.subjects.into_iter().collect();
            for chunk in subjects.chunks(UPSERT_CHUNK) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO tracker_subjects_day (day, action, subject_type, subject_id, count) ",
                );
                qb.push_values(chunk, |mut row, ((day, a, s, id), n)| {
                    row.push_bind(*day).push_bind(*a).push_bind(*s).push_bind(*id).push_bind(*n);
                });
                qb.push(
                    " ON CONFLICT (day, action, subject_type, subject_id) DO UPDATE \
                     SET count = tracker_subjects_day.count + excluded.count",
                );
                qb.build().execute(&mut *conn).await?;
            }
            Ok(fresh.len() as u64)
        }
    };
}

/// [`fold`](sqlite::fold) for SQLite.
pub(crate) mod sqlite {
    fold_for!(sqlx::Sqlite);
}

/// [`fold`](postgres::fold) for PostgreSQL.
pub(crate) mod postgres {
    fold_for!(sqlx::Postgres);
}

/// Stores `events` and folds the new ones in one transaction. Returns how many were new.
///
/// # Errors
/// The store fails; the transaction is rolled back and nothing changed.
pub async fn fold_batch(store: &switchboard_store::Store, events: &[Event]) -> crate::Result<u64> {
    use switchboard_store::Store;
    Ok(match store {
        Store::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            let fresh = sqlite::fold(&mut tx, events, None).await?;
            tx.commit().await?;
            fresh
        }
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let fresh = postgres::fold(&mut tx, events, None).await?;
            tx.commit().await?;
            fresh
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
