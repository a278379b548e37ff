//! Errors of the control crate. Expected outcomes of commands (refusals, timeouts) are not
//! errors: they are [`crate::op::Refusal`]s and console output.
use std::net::SocketAddr;

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has an unusable value.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// The console's gRPC listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// `--wait-agents` were not all attached within `--wait-timeout` (a runtime failure, exit 1:
    /// the flags were fine, the agents did not come).
    #[error("only {attached} of {wanted} agents attached to {addr} within {waited:?}")]
    TooFewAgents {
        /// Agents attached when the wait ended.
        attached: usize,
        /// `--wait-agents`.
        wanted: usize,
        /// The console's address.
        addr: SocketAddr,
        /// `--wait-timeout`.
        waited: std::time::Duration,
    },
    /// The server refused this agent's token; retrying cannot help.
    #[error("the server refused our credentials: {0}")]
    Unauthenticated(String),
    /// The gRPC transport failed (serving, or connecting for the bench).
    #[error("grpc transport")]
    Transport(#[from] tonic::transport::Error),
    /// Reading operator input failed.
    #[error("console input: {0}")]
    Console(String),
    /// The benchmark could not complete its measurement.
    #[error("bench: {0}")]
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
