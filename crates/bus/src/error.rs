//! Bus errors.

/// Bus error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL scheme is neither `memory://` nor `nats://` (a configuration error).
    #[error("unsupported bus url")]
    UnsupportedUrl(#[source] switchboard_core::ConfigError),
    /// Nobody is subscribed to the request subject.
    #[error("no responders on {0}")]
    NoResponders(String),
    /// The reply or acknowledgement did not arrive in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No stream captures the subject, or the named stream/consumer does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A subject or subject pattern is malformed (empty token, misplaced wildcard, whitespace).
    #[error("invalid subject {0}")]
    InvalidSubject(String),
    /// Invalid stream or consumer configuration.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// The engine failed (connection lost, server error).
    #[error("{0}")]
    Engine(String),
}

impl Error {
    /// A configuration error saying `message` (exit 64).
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(switchboard_core::ConfigError::new(message))
    }
}

/// Result alias for the bus crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
