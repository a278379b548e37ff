//! Errors of this crate.
//!
//! Request-level refusals are not errors: they are [`crate::rejection::Rejection`] variants.
//! These are the failures of the machinery itself (store, bus, sockets, bad configuration).

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store")]
    Store(#[from] switchboard_store::Error),
    /// A query failed.
    #[error("database")]
    Db(#[from] switchboard_store::sqlx::Error),
    /// The bus failed.
    #[error("bus")]
    Bus(#[from] switchboard_bus::Error),
    /// A journal entry or bus message is not a JSON array of events.
    #[error("corrupt journal entry")]
    Corrupt(#[from] serde_json::Error),
    /// Binding or serving a socket failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// Shared core failure (admin server).
    #[error(transparent)]
    Core(#[from] switchboard_core::Error),
    /// Invalid flags.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// A worker's batch did not finish within its ack wait (store unreachable or stuck); it
    /// was abandoned and is redelivered.
    #[error("batch not finished within the ack wait ({0:?}); abandoned, it is redelivered")]
    Stalled(std::time::Duration),
    /// An HTTP client call failed (benchmark, demo generator).
    #[error("http")]
    Http(#[from] reqwest::Error),
    /// The benchmark could not complete.
    #[error("benchmark: {0}")]
    Bench(String),
}

impl Error {
    /// A configuration error saying `message` (exit 64).
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(switchboard_core::ConfigError::new(message))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
