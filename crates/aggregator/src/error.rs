//! Errors of this crate. Only startup and check failures are errors: bad frames and lost
//! connections are expected outcomes, counted and logged where they happen.

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has an unusable value.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A socket could not be used.
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// The wsserver simulator saw reports that differ from its ground truth.
    #[error("{mismatches} of {checked} reports did not match the ground truth")]
    Mismatch {
        /// Reports compared with a closed window.
        checked: u64,
        /// Reports that differed.
        mismatches: u64,
    },
    /// The benchmark could not run.
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
