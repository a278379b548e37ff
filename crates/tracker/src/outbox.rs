//! The embedded-mode journal: a table in the local store.
//!
//! The in-memory bus is not durable, so in embedded mode "202 = durably accepted" means
//! "committed to `tracker_outbox`". A worker takes rows with `DELETE … RETURNING`, folds them
//! into the read model and commits both in one transaction: a crash before the commit leaves
//! the rows in place, a crash after it has already removed them. Exactly once, no bus needed,
//! and collector and worker may be separate processes sharing the SQLite file.
use switchboard_store::Store;

use crate::Result;
use crate::event::Event;
use crate::readmodel;

/// Workers of one process fold one batch at a time. With a single writer, a second worker
/// can only overlap its read and decode with the first one's commit, and on this path that
/// lost more than it gained: both read the same first entries and one threw its work away
/// (`bench tracker --workers 1,2,4`: 113k, 100k, 79k events/s; serialized, all three ~100k).
/// Workers in other processes sharing the file still meet at the `seq` range check below.
static SQLITE_FOLDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What one [`take_and_fold`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Journal entries (collector requests) consumed.
    pub entries: u64,
    /// Events in them.
    pub events: u64,
    /// Events that were new to the store (the others were already folded).
    pub fresh: u64,
}

/// Appends one journal entry per body (a JSON array of events) in one transaction.
///
/// # Errors
/// The store fails; then nothing was appended.
pub async fn append(store: &Store, entries: &[(String, usize)], now_ms: i64) -> Result<()> {
    macro_rules! insert {
        ($db:ty, $pool:expr) => {{
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO tracker_outbox (body, events, created_ms) ",
            );
            qb.push_values(entries, |mut row, (body, n)| {
                row.push_bind(body).push_bind(*n as i64).push_bind(now_ms);
            });
            qb.build().execute($pool).await?;
        }};
    }
    match store {
        Store::Sqlite(pool) => {
            let _writer = readmodel::sqlite::WRITER.lock().await;
            insert!(sqlx::Sqlite, pool);
        }
        Store::Postgres(pool) => insert!(sqlx::Postgres, pool),
    }
    Ok(())
}

/// Takes up to `max_entries` journal entries, folds their events, and commits both at once.
///
/// # Errors
/// The store fails (the transaction is rolled back: the entries stay in the journal), or an
/// entry is not a JSON array of events (cannot happen with our collector; nothing is taken
/// and the caller logs it).
pub async fn take_and_fold(store: &Store, max_entries: usize) -> Result<Folded> {
    let limit = i64::try_from(max_entries).unwrap_or(i64::MAX);
    match store {
        Store::Sqlite(pool) => take_and_fold_sqlite(pool, limit).await,
        // SKIP LOCKED lets several workers take disjoint entries concurrently.
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let bodies: Vec<String> = sqlx::query_scalar(
                "DELETE FROM tracker_outbox WHERE seq IN \
                 (SELECT seq FROM tracker_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING body",
            )
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let (events, entries) = decode(&bodies)?;
            let fresh = readmodel::postgres::fold(&mut tx, &events, None).await?;
            tx.commit().await?;
            Ok(Folded { entries, events: events.len() as u64, fresh })
        }
    }
}

/// SQLite has one writer, so everything that needs no write lock happens before taking it:
/// reading the entries (a WAL snapshot, which does not block the collector), decoding them
/// and aggregating their deltas. Inside the write transaction the entries are deleted by
/// their `seq` range; `AUTOINCREMENT` never reuses or back-fills a `seq`, so the range now
/// holds at most the entries read, and fewer only if another worker (another process
/// sharing the file) folded some meanwhile: then nothing is folded and the next round reads
/// afresh. Consuming and folding still commit together, so exactly-once is unchanged.
async fn take_and_fold_sqlite(pool: &sqlx::SqlitePool, limit: i64) -> Result<Folded> {
    let _folder = SQLITE_FOLDER.lock().await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, body FROM tracker_outbox ORDER BY seq LIMIT ?")
            .bind(limit)
            .fetch_all(pool)
            .await?;
    let (Some(&(first, _)), Some(&(last, _))) = (rows.first(), rows.last()) else {
        return Ok(Folded::default());
    };
    let bodies: Vec<String> = rows.into_iter().map(|(_, body)| body).collect();
    let (events, entries) = decode(&bodies)?;
    let deltas = readmodel::Deltas::of(&events);
    let _writer = readmodel::sqlite::WRITER.lock().await;
    let mut tx = pool.begin().await?;
    let taken = sqlx::query("DELETE FROM tracker_outbox WHERE seq BETWEEN ? AND ?")
        .bind(first)
        .bind(last)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if taken != entries {
        tx.rollback().await?;
        tracing::debug!(entries, taken, "outbox entries taken by another worker; rereading");
        return Ok(Folded::default());
    }
    let fresh = readmodel::sqlite::fold(&mut tx, &events, Some(deltas)).await?;
    tx.commit().await?;
    Ok(Folded { entries, events: events.len() as u64, fresh })
}

/// Events waiting in the journal.
///
/// # Errors
/// The store fails.
pub async fn pending_events(store: &Store) -> Result<i64> {
    const SQL: &str = "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM tracker_outbox";
    Ok(match store {
        Store::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
        Store::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
    })
}

fn decode(bodies: &[String]) -> Result<(Vec<Event>, u64)> {
    let mut events = Vec::new();
    for body in bodies {
        let batch: Vec<Event> = serde_json::from_str(body)?;
        events.extend(batch);
    }
    Ok((events, bodies.len() as u64))
}
