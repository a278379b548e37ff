//! Test harness shared by every crate's integration tests.
//!
//! * [`NatsServer::start`] — a throw-away `nats-server -js -sd <tmpdir>` on a free loopback port;
//!   [`NatsServer::kill`] / [`NatsServer::restart`] (same port, same store) for crash tests.
//! * [`PostgresServer::start`] — a throw-away PostgreSQL cluster (`initdb` + `postgres` in a
//!   temp dir, run as the `postgres` user when we are root) on a free loopback port.
//!
//! Both stop (and delete their data) on drop. Tests never rely on servers someone left running.
//!
//! * [`make_certs`] — a throw-away CA with server and client certificates (openssl).
//! * [`fuzz`] — seed corpora and mutations for property-based fuzzing of network parsers.
#![forbid(unsafe_code)]

mod certs;
pub mod fuzz;
mod nats;
mod port;
mod postgres;

pub use certs::make_certs;
pub use nats::NatsServer;
pub use port::free_port;
pub use postgres::PostgresServer;
