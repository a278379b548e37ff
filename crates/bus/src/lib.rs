//! The message bus every distributed role talks through.
//!
//! One [`Bus`] handle, two engines selected by URL:
//! * `memory://` — in-process, the embedded default (`switchboard demo`, single-node roles);
//! * `nats://host:4222` — NATS core for pub/sub and request/reply, JetStream for durable streams.
//!
//! # API contract (both engines pass the same conformance suite in `tests/`)
//! * **Pub/sub** ([`Bus::publish`], [`Bus::subscribe`], [`Bus::queue_subscribe`]): at-most-once
//!   fan-out; queue groups split messages between members.
//! * **Request/reply** ([`Bus::request`], [`Message::respond`]).
//! * **Durable streams** ([`Bus::ensure_stream`], [`Bus::publish_durable`],
//!   [`Bus::publish_durable_batch`], [`Bus::consumer`]): `publish_durable` returns only once the
//!   message is stored; consumers are durable, named, pull-based with explicit ack; a message not
//!   acked within `ack_wait` (e.g. the worker crashed) is delivered again; several processes
//!   sharing a durable name split the work.
//! * Buffers are bounded everywhere: a slow subscriber loses messages (counted in
//!   `bus_dropped_total`), a full stream discards its oldest messages (memory engine:
//!   `bus_stream_discarded_total`). Both shed points log, at most once per 10 s each.
//! * Subjects and configurations are validated the same way for both engines
//!   ([`Error::InvalidSubject`], [`Error::Config`]).
//!
//! # Metrics
//! `bus_dropped_total{engine,reason}`, `bus_stream_discarded_total{engine,reason}`,
//! `bus_duplicates_total{engine}` (publishes dropped by msg_id dedup),
//! `bus_redelivered_total{engine}` (deliveries after the first).
//!
//! This file is the contract; the facade is `bus.rs` (connect, pub/sub, request, streams),
//! `message.rs` (messages, subscriptions) and `stream.rs` (stream and consumer configuration,
//! consumers, deliveries); the engines live in `memory.rs` and `nats.rs`, subject rules in
//! `subject.rs`, configuration checks in `config.rs`, shedding in `shed.rs`.
#![forbid(unsafe_code)]

mod bus;
mod config;
mod error;
mod memory;
mod message;
mod nats;
mod shed;
mod stream;
mod subject;

use std::time::Duration;

pub use bus::Bus;
pub use bytes::Bytes;
pub use error::{Error, Result};
pub use message::{Message, Subscription};
pub use stream::{Consumer, ConsumerConfig, DeliverFrom, Delivery, StreamConfig};

/// Longest `fetch` wait, nak delay and `ack_wait` honoured; longer fetch waits and nak delays
/// are clamped to it (they would overflow deadlines and JetStream's nanosecond fields).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
