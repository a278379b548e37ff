//! The relational store, selected by URL:
//! * `sqlite://./data/switchboard.db` — embedded default (WAL mode, file created if missing);
//! * `postgres://user@host:port/db` — PostgreSQL for distributed mode.
//!
//! Each service owns its schema: it ships its own migrations (one directory per engine) and
//! applies them with [`Store::migrate`]. Version numbers are globally unique by convention
//! (store 1xxx, aggregator 3xxx, presence 4xxx, jobproxy 5xxx, tracker 6xxx), so several
//! services can share one database, and replicas migrating at once are serialised.
//!
//! # Layout
//! * `store` — [`Store`]: opening a URL (waiting for a PostgreSQL that is still starting),
//!   pools, ping, close.
//! * `migration` — applying one service's migrations beside the others', under a lock.
//! * `error` — [`Error`]: what failed and where, URLs without passwords.
//!
//! Queries go straight to the engine's pool ([`Store::sqlite`] / [`Store::postgres`]): the two
//! dialects differ exactly where performance matters (bulk insert, upsert), so services
//! write both and the conformance suite runs them against both.
#![forbid(unsafe_code)]

mod error;
mod migration;
mod store;

pub use error::{Error, Result};
pub use store::{Backend, DEFAULT_CONNECT_WAIT, Store};

/// Re-exported so services use the same sqlx as the store.
pub use sqlx;
