//! Store errors: what failed and where, with secrets removed from URLs.
use std::path::PathBuf;

/// Store error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL scheme is neither `sqlite:` nor `postgres:` (a configuration error).
    #[error("unsupported store url")]
    UnsupportedUrl(#[source] switchboard_core::ConfigError),
    /// The database could not be opened or reached.
    #[error("cannot connect to {url}")]
    Connect {
        /// URL with the password removed.
        url: String,
        /// Cause.
        source: sqlx::Error,
    },
    /// The directory for the SQLite file could not be created.
    #[error("cannot create the store directory {path}")]
    CreateDir {
        /// Directory that failed.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A migration failed, or one that was already applied has been changed since.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database")]
    Db(#[from] sqlx::Error),
}

/// Result alias for the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
