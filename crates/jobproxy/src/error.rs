//! Errors of this crate.

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The feature is not built yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
