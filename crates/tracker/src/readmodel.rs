//! The write side of the CQRS split: stores raw events and folds them into the read model,
//! inside the caller's transaction.
//!
//! Idempotence comes from the raw table: `INSERT … ON CONFLICT (id) DO NOTHING RETURNING id`
//! tells which events are new, and only those are counted. A redelivered batch (worker killed
//! after commit but before ack), or a client's retry of events labelled with a `messageId`
//! (whose ids derive from it), therefore changes nothing. Aggregation happens in memory per
//! batch first, so the upserts touch one row per distinct key, not one per event.
//!
//! The engines write the same rows: SQLite in multi-row `INSERT`s of up to 1,000 rows,
//! PostgreSQL in one statement per table per batch (array parameters through `unnest`).
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

/// [`fold`](sqlite::fold) for SQLite: multi-row statements of up to 1,000 rows (SQLite has no
/// array parameters).
pub(crate) mod sqlite {
    use sqlx::QueryBuilder;

    use super::{Deltas, RAW_CHUNK, UPSERT_CHUNK};
    use crate::event::Event;

    /// SQLite has a single writer. Writers in one process (collector journal and worker in
    /// the demo or the benchmark) queue here instead of in SQLite's busy handler, which polls
    /// with sleeps of up to 100 ms and made each side stall behind the other's short commits.
    /// Writers in other processes still meet at SQLite's lock (with `busy_timeout`).
    pub(crate) static WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Inserts `events` (skipping ids already stored) and folds the new ones into the
    /// read model. Returns how many were new. `all_new` are the deltas of all `events`
    /// when the caller computed them already; they are used only if no event was stored
    /// before (otherwise the deltas are recomputed from the new events alone).
    pub(crate) async fn fold<'a>(
        conn: &mut sqlx::SqliteConnection,
        events: &'a [Event],
        all_new: Option<Deltas<'a>>,
    ) -> sqlx::Result<u64> {
        let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
        for chunk in events.chunks(RAW_CHUNK) {
            let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
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
        // In key order, as on PostgreSQL: each upsert then walks its table's B-tree from left
        // to right instead of jumping between pages at random.
        let mut minutes: Vec<_> = d.minutes.into_iter().collect();
        minutes.sort_unstable();
        for chunk in minutes.chunks(UPSERT_CHUNK) {
            let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
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
        let mut objects: Vec<_> = d.objects.into_iter().collect();
        objects.sort_unstable();
        for chunk in objects.chunks(UPSERT_CHUNK) {
            let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO tracker_objects_day (day, object_type, object_id) ",
            );
            qb.push_values(chunk, |mut row, (day, t, id)| {
                row.push_bind(*day).push_bind(*t).push_bind(*id);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *conn).await?;
        }
        let mut subjects: Vec<_> = d.subjects.into_iter().collect();
        subjects.sort_unstable();
        for chunk in subjects.chunks(UPSERT_CHUNK) {
            let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
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
}

/// [`fold`](postgres::fold) for PostgreSQL: the same writes as SQLite's, but each table gets
/// one statement per batch whatever its size — every column goes as one array parameter and
/// `unnest` turns them back into rows. One prepared statement per table, eight parameters
/// instead of 8,000 per 1,000 rows, nothing for the server to parse or plan per batch. Rows
/// are written in key order, so concurrent workers lock shared rows in the same order and
/// cannot deadlock.
pub(crate) mod postgres {
    use sqlx::PgConnection;

    use super::Deltas;
    use crate::event::Event;

    const INSERT_EVENTS: &str = "INSERT INTO tracker_events (id, object_id, object_type, action, \
        subject_id, subject_type, ts_ms, received_ms) \
        SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], \
        $6::text[], $7::int8[], $8::int8[]) ON CONFLICT (id) DO NOTHING RETURNING id";
    const UPSERT_MINUTES: &str = "INSERT INTO tracker_counts_minute \
        (minute_ms, action, subject_type, count) \
        SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) \
        ON CONFLICT (minute_ms, action, subject_type) DO UPDATE \
        SET count = tracker_counts_minute.count + excluded.count";
    const INSERT_OBJECTS: &str = "INSERT INTO tracker_objects_day (day, object_type, object_id) \
        SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[]) ON CONFLICT DO NOTHING";
    const UPSERT_SUBJECTS: &str = "INSERT INTO tracker_subjects_day \
        (day, action, subject_type, subject_id, count) \
        SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
        ON CONFLICT (day, action, subject_type, subject_id) DO UPDATE \
        SET count = tracker_subjects_day.count + excluded.count";

    /// Inserts `events` (skipping ids already stored) and folds the new ones into the read
    /// model. Returns how many were new. `all_new`: as for SQLite's `fold`.
    pub(crate) async fn fold<'a>(
        conn: &mut PgConnection,
        events: &'a [Event],
        all_new: Option<Deltas<'a>>,
    ) -> sqlx::Result<u64> {
        let mut sorted: Vec<&Event> = events.iter().collect();
        sorted.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let stored: Vec<String> = sqlx::query_scalar(INSERT_EVENTS)
            .bind(sorted.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.object_id).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.object_type.as_str()).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.action.as_str()).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.subject_id).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.subject_type.as_str()).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.ts_ms).collect::<Vec<_>>())
            .bind(sorted.iter().map(|e| e.received_ms).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
        let d = match all_new {
            Some(d) if stored.len() == events.len() => d,
            _ => {
                // Taken out as matched: a batch may hold one id twice (a client's messageId
                // repeated), and only one copy was stored.
                let mut ids: std::collections::HashSet<String> = stored.iter().cloned().collect();
                Deltas::of(events.iter().filter(|e| ids.remove(&e.id)))
            }
        };
        let fresh = stored.len() as u64;
        upsert(conn, d).await?;
        Ok(fresh)
    }

    async fn upsert(conn: &mut PgConnection, d: Deltas<'_>) -> sqlx::Result<()> {
        let mut minutes: Vec<_> = d.minutes.into_iter().collect();
        minutes.sort_unstable();
        if !minutes.is_empty() {
            sqlx::query(UPSERT_MINUTES)
                .bind(minutes.iter().map(|((m, _, _), _)| *m).collect::<Vec<_>>())
                .bind(minutes.iter().map(|((_, a, _), _)| *a).collect::<Vec<_>>())
                .bind(minutes.iter().map(|((_, _, s), _)| *s).collect::<Vec<_>>())
                .bind(minutes.iter().map(|(_, n)| *n).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        let mut objects: Vec<_> = d.objects.into_iter().collect();
        objects.sort_unstable();
        if !objects.is_empty() {
            sqlx::query(INSERT_OBJECTS)
                .bind(objects.iter().map(|(day, _, _)| *day).collect::<Vec<_>>())
                .bind(objects.iter().map(|(_, t, _)| *t).collect::<Vec<_>>())
                .bind(objects.iter().map(|(_, _, id)| *id).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        let mut subjects: Vec<_> = d.subjects.into_iter().collect();
        subjects.sort_unstable();
        if !subjects.is_empty() {
            sqlx::query(UPSERT_SUBJECTS)
                .bind(subjects.iter().map(|((day, _, _, _), _)| *day).collect::<Vec<_>>())
                .bind(subjects.iter().map(|((_, a, _, _), _)| *a).collect::<Vec<_>>())
                .bind(subjects.iter().map(|((_, _, s, _), _)| *s).collect::<Vec<_>>())
                .bind(subjects.iter().map(|((_, _, _, id), _)| *id).collect::<Vec<_>>())
                .bind(subjects.iter().map(|(_, n)| *n).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Stores `events` and folds the new ones in one transaction. Returns how many were new.
/// On SQLite the deltas are aggregated before taking the single writer ([`sqlite::WRITER`]).
///
/// # Errors
/// The store fails; the transaction is rolled back and nothing changed.
pub async fn fold_batch(store: &switchboard_store::Store, events: &[Event]) -> crate::Result<u64> {
    use switchboard_store::Store;
    Ok(match store {
        Store::Sqlite(pool) => {
            let deltas = Deltas::of(events);
            let _writer = sqlite::WRITER.lock().await;
            let mut tx = pool.begin().await?;
            let fresh = sqlite::fold(&mut tx, events, Some(deltas)).await?;
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
