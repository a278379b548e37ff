//! Applying one service's migrations to a database that several services share.
//!
//! Each service ships its own [`Migrator`]; versions are globally unique by convention (see
//! the crate docs). Two things make sharing safe:
//! * every migrator ignores versions it does not know (another service applied them), while
//!   still refusing a change to one of its own applied migrations (checksum mismatch);
//! * concurrent migrators are serialised: PostgreSQL through sqlx's advisory lock, SQLite by
//!   running the whole migration under `BEGIN IMMEDIATE` (SQLite's write lock), so two
//!   processes opening the same file cannot both try to apply the same version.
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::Result;

/// Applies `m` to a SQLite pool, holding the database's write lock throughout.
pub(crate) async fn run_sqlite(m: &Migrator, pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // Inside our transaction each migration runs in a savepoint; sqlx's own lock is a no-op
    // on SQLite, the IMMEDIATE transaction is the lock. `run_direct` rather than `run`:
    // `run(&mut conn)` makes the future !Send (sqlx's "Acquire is not general enough").
    tolerant(m).run_direct(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Applies `m` to a PostgreSQL pool (sqlx takes a per-database advisory lock).
pub(crate) async fn run_postgres(m: &Migrator, pool: &PgPool) -> Result<()> {
    tolerant(m).run(pool).await?;
    Ok(())
}

/// A copy of `m` that tolerates versions applied by other services' migrators.
///
/// Services hand us `static` migrators from `sqlx::migrate!`, which cannot be mutated, so we
/// rebuild one from its (public, semver-exempt) fields; sqlx is pinned in the workspace.
fn tolerant(m: &Migrator) -> Migrator {
    let mut m = Migrator { migrations: m.migrations.clone(), no_tx: m.no_tx, ..Migrator::DEFAULT };
    m.set_ignore_missing(true);
    m
}
