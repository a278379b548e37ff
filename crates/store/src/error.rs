//! Store errors.

/// Store error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL scheme is neither `sqlite:` nor `postgres:`.
    #[error("unsupported store url {0:?} (expected sqlite://path or postgres://…)")]
    UnsupportedUrl(String),
    /// The database could not be opened or reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// URL with the password removed.
        url: String,
        /// Cause.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Filesystem error (creating the SQLite directory).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
