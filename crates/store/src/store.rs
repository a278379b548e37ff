//! The [`Store`] handle: one pool per engine, opened from a URL.
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use switchboard_core::backoff::Backoff;
use switchboard_core::redact::url as redact;

use crate::{Error, Result, migration};

/// Server-side limits of every PostgreSQL session we open. A client that vanishes mid
/// transaction (partitioned, frozen, SIGKILLed with a half-open socket) must not keep its row
/// locks: other replicas would wait on them until the kernel's two-hour keepalive. With these,
/// the server ends such a session within ~30 s and its transaction rolls back:
/// * idle in a transaction for 15 s (our transactions never pause between statements);
/// * an unanswered keepalive probe after 10 s idle + 3 × 5 s;
/// * data it sends unacknowledged for 20 s (the client stopped reading).
const SESSION_LIMITS: [(&str, &str); 5] = [
    ("idle_in_transaction_session_timeout", "15s"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "20000"),
];

/// How long [`Store::connect`] waits for a PostgreSQL server that is still starting.
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long [`Store::connect`] retries a SQLite file that another connection holds locked
/// while opening it (the same as its `busy_timeout`).
const SQLITE_OPEN_WAIT: Duration = Duration::from_secs(10);

/// `SQLITE_BUSY` (5) and its extended codes: another connection holds the lock.
fn sqlite_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// Which engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A connection pool to the store. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

static CORE_SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static CORE_POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Opens the store named by `url` and applies the store's own migrations, waiting up to
    /// [`DEFAULT_CONNECT_WAIT`] for a PostgreSQL server that refuses connections (still
    /// starting, e.g. beside us in docker compose).
    ///
    /// SQLite: the parent directory is created; WAL journal with `synchronous=NORMAL`
    /// (durable across process crashes, which is what "accepted" means in embedded mode).
    ///
    /// # Errors
    /// Unknown scheme, unreachable server, or a failed migration.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_within(url, DEFAULT_CONNECT_WAIT).await
    }

    /// [`Store::connect`] with an explicit wait for a PostgreSQL server that refuses
    /// connections. Other errors (bad credentials, unknown database, …) fail at once.
    ///
    /// # Errors
    /// As [`Store::connect`]; an unreachable server reports the last connection error.
    pub async fn connect_within(url: &str, wait: Duration) -> Result<Self> {
        let store = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await?
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url, wait).await?
        } else {
            let why = format!("{:?} (expected sqlite://path or postgres://…)", redact(url));
            return Err(Error::UnsupportedUrl(switchboard_core::ConfigError::new(why)));
        };
        store.migrate(&CORE_SQLITE, &CORE_POSTGRES).await?;
        tracing::info!(url = %redact(url), backend = ?store.backend(), "store connected");
        Ok(store)
    }

    async fn connect_sqlite(url: &str) -> Result<Self> {
        let connect_err = |source| Error::Connect { url: redact(url), source };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = opts.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| Error::CreateDir { path: parent.to_owned(), source })?;
        }
        let mut pool = SqlitePoolOptions::new().max_connections(8);
        if url.contains(":memory:") || url.contains("mode=memory") {
            // An in-memory database lives as long as its last connection: never let the
            // pool close them all (idle reaping, lifetime recycling).
            pool = pool.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        // Several processes opening a fresh file at once (roles started together): one creates
        // it and switches it to WAL while the others get SQLITE_BUSY at open, which the busy
        // timeout does not cover. Wait for that as long as the busy timeout would.
        let deadline = Instant::now() + SQLITE_OPEN_WAIT;
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        loop {
            match pool.clone().connect_with(opts.clone()).await {
                Ok(pool) => return Ok(Self::Sqlite(pool)),
                Err(e) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let Some(wait) =
                        backoff.next_delay_within(remaining).filter(|_| sqlite_busy(&e))
                    else {
                        return Err(connect_err(e));
                    };
                    tracing::debug!(url = %redact(url), error = %switchboard_core::describe_error(&e), "sqlite file busy at open, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn connect_postgres(url: &str, wait: Duration) -> Result<Self> {
        let connect_err = |source| Error::Connect { url: redact(url), source };
        let opts = PgConnectOptions::from_str(url).map_err(connect_err)?.options(SESSION_LIMITS);
        // The pool would retry a refused connection until its acquire timeout and then report
        // only "timed out"; probing first keeps the real cause for the error message.
        let deadline = Instant::now() + wait;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            // Even a spent wait allows one short attempt, so the error names the real cause.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(
                remaining.max(Duration::from_millis(50)),
                PgConnection::connect_with(&opts),
            )
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
            match attempt {
                Ok(conn) => {
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let Some(wait) =
                        backoff.next_delay_within(remaining).filter(|_| server_starting(&e))
                    else {
                        return Err(connect_err(e));
                    };
                    tracing::info!(url = %redact(url), error = %switchboard_core::describe_error(&e), "store not reachable yet, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts);
        Ok(Self::Postgres(pool))
    }

    /// Applies a service's migrations (the one matching this engine). Migrations that other
    /// services applied to the same database are left alone; concurrent callers (other
    /// processes included) are serialised.
    ///
    /// # Errors
    /// A migration fails or a previously applied one was changed.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<()> {
        match self {
            Self::Sqlite(pool) => migration::run_sqlite(sqlite, pool).await,
            Self::Postgres(pool) => migration::run_postgres(postgres, pool).await,
        }
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite pool, if this is SQLite.
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, if this is PostgreSQL.
    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(p) => Some(p),
            Self::Sqlite(_) => None,
        }
    }

    /// Round-trips a trivial query (readiness checks).
    ///
    /// # Errors
    /// The database does not answer.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Self::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
            Self::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// Errors that mean "the server is not up yet": worth waiting for.
fn server_starting(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        // 57P03 cannot_connect_now: starting up, recovering, shutting down.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}
