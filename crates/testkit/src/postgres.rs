//! Throw-away PostgreSQL (stub — implemented by the store work).

/// A running PostgreSQL cluster; stopped and deleted on drop.
pub struct PostgresServer {
    /// `postgres://…` URL of a ready, empty database.
    pub url: String,
}
