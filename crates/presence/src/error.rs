//! Errors of the presence crate: startup and I/O failures of the roles. Expected outcomes on the
//! hot path (a stale report, a shed report, an unknown status) are not errors: they are counted.

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument is unusable.
    #[error("invalid configuration")]
    Config(#[from] switchboard_core::ConfigError),
    /// The bus refused an operation.
    #[error("bus")]
    Bus(#[from] switchboard_bus::Error),
    /// The store refused an operation.
    #[error("store")]
    Store(#[from] switchboard_store::Error),
    /// A SQL statement failed.
    #[error("sql")]
    Sql(#[from] switchboard_store::sqlx::Error),
    /// A gRPC server failed to start or serve.
    #[error("grpc transport")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("grpc reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A gRPC call failed.
    #[error("grpc call")]
    Rpc(#[from] tonic::Status),
    /// Core setup (binding an address) failed.
    #[error(transparent)]
    Core(#[from] switchboard_core::Error),
    /// Socket or file I/O failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// A stored snapshot cannot be decoded.
    #[error("corrupt snapshot: {0}")]
    Snapshot(String),
    /// A benchmark child process misbehaved.
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
