//! Errors of this crate: startup and configuration problems, and failures of the helper
//! programs (jobclient, bench). Per-request outcomes of the proxy are not errors of this kind:
//! they are HTTP answers, see `failure.rs`.
use std::net::SocketAddr;

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A flag holds a value we cannot use.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// An I/O error outside a single request (spawning, reading `/proc`, …).
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// An HTTP client could not be built or a request of a helper program failed.
    #[error("http client")]
    Client(#[from] reqwest::Error),
    /// The message bus joining proxy nodes failed (connect, subscribe).
    #[error("bus")]
    Bus(#[from] switchboard_bus::Error),
    /// The benchmark could not complete a phase.
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
