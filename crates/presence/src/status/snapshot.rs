//! Snapshots of a status replica's last-seen window in the store, so a restarted replica
//! (even after `kill -9`) answers with the same count at once instead of rebuilding 3 minutes.
//!
//! A snapshot is one row per replica: the remembered users and their last-seen second, packed
//! as a blob (`PSN1`, count, then 16-byte id + 8-byte second per user — 24 MB for a million
//! users, one write). Bus messages are acknowledged only after a snapshot covering them is
//! stored, so whatever a crash loses from memory is redelivered by the bus.
use switchboard_store::Store;
use switchboard_store::sqlx;

use crate::{Error, Result};

/// Migrations of the presence schema on SQLite (versions 4xxx).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// Migrations of the presence schema on PostgreSQL (versions 4xxx).
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Runs the same sqlx expression on whichever pool `store` has: the SQL here is portable, only
/// the pool type differs.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

const MAGIC: &[u8; 4] = b"PSN1";
const ENTRY: usize = 24;

/// A replica's window at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was taken, Unix ms.
    pub taken_ms: i64,
    /// (user, last-seen Unix second).
    pub entries: Vec<(u128, i64)>,
}

impl Snapshot {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.entries.len() * ENTRY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (user, sec) in &self.entries {
            out.extend_from_slice(&user.to_be_bytes());
            out.extend_from_slice(&sec.to_le_bytes());
        }
        out
    }

    fn decode(taken_ms: i64, body: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Snapshot(why.to_owned());
        let (magic, rest) = body.split_at_checked(4).ok_or_else(|| bad("too short"))?;
        if magic != MAGIC {
            return Err(bad("unknown format"));
        }
        let (count, rest) = rest.split_at_checked(8).ok_or_else(|| bad("too short"))?;
        let count = u64::from_le_bytes(count.try_into().map_err(|_| bad("count"))?);
        if rest.len() as u64 != count.saturating_mul(ENTRY as u64) {
            return Err(bad("length does not match the user count"));
        }
        let entries = rest
            .chunks_exact(ENTRY)
            .map(|c| {
                let (id, sec) = c.split_at(16);
                let id: [u8; 16] = id.try_into().unwrap_or_default();
                let sec: [u8; 8] = sec.try_into().unwrap_or_default();
                (u128::from_be_bytes(id), i64::from_le_bytes(sec))
            })
            .collect();
        Ok(Self { taken_ms, entries })
    }
}

/// Applies the presence migrations.
///
/// # Errors
/// A migration fails.
pub async fn migrate(store: &Store) -> Result<()> {
    store.migrate(&SQLITE_MIGRATOR, &PG_MIGRATOR).await?;
    Ok(())
}

/// Stores `snap` as `replica`'s snapshot, replacing the previous one.
///
/// # Errors
/// The store refuses the write.
pub async fn save(store: &Store, replica: &str, snap: &Snapshot) -> Result<()> {
    let body = snap.encode();
    let users = i64::try_from(snap.entries.len()).unwrap_or(i64::MAX);
    const UPSERT: &str = "INSERT INTO presence_snapshot (replica, taken_ms, users, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (replica) DO UPDATE SET taken_ms = excluded.taken_ms, users = excluded.users, body = excluded.body";
    on_pool!(store, pool => {
        sqlx::query(UPSERT)
            .bind(replica)
            .bind(snap.taken_ms)
            .bind(users)
            .bind(body)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Loads `replica`'s snapshot, if any.
///
/// # Errors
/// The store fails, or the stored blob is corrupt.
pub async fn load(store: &Store, replica: &str) -> Result<Option<Snapshot>> {
    const SELECT: &str = "SELECT taken_ms, body FROM presence_snapshot WHERE replica = $1";
    let row: Option<(i64, Vec<u8>)> =
        on_pool!(store, pool => sqlx::query_as(SELECT).bind(replica).fetch_optional(pool).await?);
    row.map(|(taken_ms, body)| Snapshot::decode(taken_ms, &body)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_corruption_is_an_error() {
        let snap = Snapshot { taken_ms: 5, entries: vec![(u128::MAX, -3), (7, 1_700_000_000)] };
        let body = snap.encode();
        assert_eq!(Snapshot::decode(5, &body).unwrap(), snap);
        assert!(Snapshot::decode(5, &body[..body.len() - 1]).is_err());
        assert!(Snapshot::decode(5, b"XXXX").is_err());
        assert!(Snapshot::decode(5, b"").is_err());
    }

    /// The same checks on whichever engine `store` runs.
    async fn keeps_the_latest_snapshot_per_replica(store: &Store) {
        migrate(store).await.unwrap();
        migrate(store).await.unwrap(); // idempotent
        assert_eq!(load(store, "a").await.unwrap(), None);
        let first = Snapshot { taken_ms: 1, entries: vec![(1, 10)] };
        let second = Snapshot { taken_ms: 2, entries: vec![(u128::MAX, 11), (2, 11)] };
        save(store, "a", &first).await.unwrap();
        save(store, "a", &second).await.unwrap();
        save(store, "b", &first).await.unwrap();
        assert_eq!(load(store, "a").await.unwrap(), Some(second));
        assert_eq!(load(store, "b").await.unwrap(), Some(first));
    }

    #[tokio::test]
    async fn sqlite_keeps_the_latest_snapshot_per_replica() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        keeps_the_latest_snapshot_per_replica(&Store::connect(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_keeps_the_latest_snapshot_per_replica() {
        let pg = switchboard_testkit::PostgresServer::start();
        keeps_the_latest_snapshot_per_replica(&Store::connect(&pg.url).await.unwrap()).await;
    }
}
