//! Errors raised by the core crate (mostly at startup).
use std::net::SocketAddr;
use std::path::PathBuf;

/// Core error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TOML config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// File that failed.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML config file is not valid.
    #[error("invalid config file {path}: {message}")]
    ConfigParse {
        /// File that failed.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Telemetry could not be initialised.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A TLS certificate, key or CA file is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// A listening socket could not be bound; names the address, since a process may have
    /// several listeners and "Address already in use" alone does not say which one.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Serving a socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
