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
//! This file is the contract; the engines live in `memory.rs` and `nats.rs`, subject rules in
//! `subject.rs`, configuration checks in `config.rs`, shedding in `shed.rs`.
#![forbid(unsafe_code)]

mod config;
mod error;
mod memory;
mod nats;
mod shed;
mod subject;

use std::time::Duration;

pub use bytes::Bytes;
pub use error::{Error, Result};

/// Longest `fetch` wait, nak delay and `ack_wait` honoured; longer fetch waits and nak delays
/// are clamped to it (they would overflow deadlines and JetStream's nanosecond fields).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A connected bus. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Bus {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    Memory(memory::MemoryBus),
    Nats(nats::NatsBus),
}

/// A message received from a subscription.
pub struct Message {
    /// Subject it was published on.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Reply handle when the publisher used [`Bus::request`].
    reply: Option<Reply>,
}

enum Reply {
    /// Capacity 1: the first answer wins, as on NATS.
    Memory(tokio::sync::mpsc::Sender<Bytes>),
    Nats {
        client: async_nats::Client,
        subject: async_nats::Subject,
    },
}

/// A stream of [`Message`]s; dropping it unsubscribes.
pub struct Subscription {
    inner: SubscriptionInner,
}

enum SubscriptionInner {
    Memory(tokio::sync::mpsc::Receiver<Message>),
    Nats(nats::NatsSubscription),
}

/// Configuration of a durable stream. `ensure_stream` is idempotent.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Stream name (letters, digits, `-`, `_`).
    pub name: String,
    /// Subjects captured (NATS wildcards `*` and `>` allowed).
    pub subjects: Vec<String>,
    /// Oldest messages are discarded beyond this many (`None`: unlimited).
    pub max_messages: Option<u64>,
    /// Oldest messages are discarded beyond this many bytes (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// Messages older than this are discarded (`None`: kept).
    pub max_age: Option<Duration>,
    /// Publishes with the same `msg_id` inside this window are stored once. Must be positive
    /// (JetStream cannot turn dedup off: publish without `msg_id` instead); capped at `max_age`.
    pub duplicate_window: Duration,
}

impl StreamConfig {
    /// A stream named `name` capturing `subjects`, unlimited, 2 min dedup window.
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            max_messages: None,
            max_bytes: None,
            max_age: None,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Where a new durable consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverFrom {
    /// From the first message still in the stream.
    All,
    /// Only messages published after the consumer is created.
    New,
    /// From the first message stored at or after this Unix time (ms).
    Time(i64),
}

/// Configuration of a durable pull consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable name; processes using the same name share (split) the messages.
    pub durable: String,
    /// Only messages on this subject (wildcards allowed); `None`: all of the stream.
    pub filter_subject: Option<String>,
    /// Unacked messages are redelivered after this long (at most [`MAX_WAIT`]).
    pub ack_wait: Duration,
    /// At most this many delivered-but-unacked messages at once (backpressure).
    pub max_ack_pending: usize,
    /// Start position when the consumer is first created.
    pub deliver_from: DeliverFrom,
}

impl ConsumerConfig {
    /// A consumer named `durable` over the whole stream: 30 s ack wait, 10,000 in flight.
    pub fn new(durable: impl Into<String>) -> Self {
        Self {
            durable: durable.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            deliver_from: DeliverFrom::All,
        }
    }
}

/// A durable pull consumer.
pub struct Consumer {
    inner: ConsumerInner,
}

enum ConsumerInner {
    Memory(memory::MemoryConsumer),
    Nats(nats::NatsConsumer),
}

/// One message delivered by a [`Consumer`]; must be [`Delivery::ack`]ed once processed.
pub struct Delivery {
    /// Subject it was published on.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Position in the stream (1-based, increasing).
    pub stream_seq: u64,
    /// How many times it has been delivered (1 on first delivery).
    pub delivered: u64,
    /// When it was stored, Unix ms.
    pub published_ms: i64,
    acker: Acker,
}

enum Acker {
    Memory(memory::MemoryAcker),
    Nats(Box<async_nats::jetstream::Message>),
}

impl Bus {
    /// Connects to the bus named by `url`: `memory://` or `nats://host:port`.
    ///
    /// # Errors
    /// Unknown scheme, or the NATS server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let engine = if Self::is_process_local_url(url) {
            Engine::Memory(memory::MemoryBus::new())
        } else if url.starts_with("nats:") || url.starts_with("tls:") {
            Engine::Nats(nats::NatsBus::connect(url).await?)
        } else {
            let url = switchboard_core::redact::url(url);
            let why = format!("{url:?} (expected memory:// or nats://host:port)");
            return Err(Error::UnsupportedUrl(switchboard_core::ConfigError::new(why)));
        };
        Ok(Self { engine })
    }

    /// A fresh in-memory bus (same as `connect("memory://")`).
    pub fn memory() -> Self {
        Self { engine: Engine::Memory(memory::MemoryBus::new()) }
    }

    /// `true` for `memory://`: what is published lives and dies with this process and reaches
    /// only subscribers in it, so callers that need durability or other processes (a journal,
    /// nodes forwarding to each other) must look elsewhere. `false` for NATS JetStream.
    /// The one engine question callers ask; [`kind`](Self::kind) is for logs only.
    pub fn is_process_local(&self) -> bool {
        matches!(self.engine, Engine::Memory(_))
    }

    /// What [`is_process_local`](Self::is_process_local) will say of the bus `url` names,
    /// before connecting: for checking flags that only make sense with one kind of bus.
    pub fn is_process_local_url(url: &str) -> bool {
        url.starts_with("memory:")
    }

    /// `"memory"` or `"nats"`, for logs and metrics labels (decide on
    /// [`is_process_local`](Self::is_process_local), not on this).
    pub fn kind(&self) -> &'static str {
        match &self.engine {
            Engine::Memory(_) => "memory",
            Engine::Nats(_) => "nats",
        }
    }

    /// Largest message the bus accepts, headers included (`None`: no limit). For NATS it is
    /// the server's `max_payload` (1 MB unless configured): callers that publish what clients
    /// sent derive their chunking from it instead of assuming a size.
    pub fn max_payload(&self) -> Option<usize> {
        match &self.engine {
            Engine::Memory(_) => None,
            Engine::Nats(b) => Some(b.max_payload()),
        }
    }

    /// Publishes `payload` on `subject` to current subscribers (at most once).
    ///
    /// # Errors
    /// [`Error::InvalidSubject`] (wildcards are not allowed here), or a closed connection.
    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        subject::validate_subject(subject)?;
        match &self.engine {
            Engine::Memory(b) => b.publish(subject, payload),
            Engine::Nats(b) => b.publish(subject, payload).await,
        }
    }

    /// Subscribes to `subject` (wildcards allowed).
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], or a closed connection.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription> {
        subject::validate_pattern(subject)?;
        match &self.engine {
            Engine::Memory(b) => Ok(b.subscribe(subject, None)),
            Engine::Nats(b) => b.subscribe(subject, None).await,
        }
    }

    /// Subscribes as a member of queue `group`: each message goes to one member.
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::Config`] for an empty group, or a closed connection.
    pub async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription> {
        subject::validate_pattern(subject)?;
        if group.is_empty() || group.chars().any(char::is_whitespace) {
            return Err(Error::config(format!("queue group {group:?}: empty or has whitespace")));
        }
        match &self.engine {
            Engine::Memory(b) => Ok(b.subscribe(subject, Some(group))),
            Engine::Nats(b) => b.subscribe(subject, Some(group)).await,
        }
    }

    /// Sends a request and waits up to `timeout` for one reply.
    ///
    /// # Errors
    /// [`Error::NoResponders`], [`Error::Timeout`], [`Error::InvalidSubject`], or a closed
    /// connection.
    pub async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes> {
        subject::validate_subject(subject)?;
        match &self.engine {
            Engine::Memory(b) => b.request(subject, payload, timeout).await,
            Engine::Nats(b) => b.request(subject, payload, timeout).await,
        }
    }

    /// Creates the durable stream, or updates its limits if it exists.
    ///
    /// # Errors
    /// Invalid configuration, or the server refuses it.
    pub async fn ensure_stream(&self, cfg: &StreamConfig) -> Result<()> {
        cfg.validate()?;
        match &self.engine {
            Engine::Memory(b) => b.ensure_stream(cfg),
            Engine::Nats(b) => b.ensure_stream(cfg).await,
        }
    }

    /// Stores one message in the stream capturing `subject`; returns its stream sequence once
    /// it is durably stored. A repeated `msg_id` inside the dedup window is stored once.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no stream captures `subject`, [`Error::Timeout`] if the store did
    /// not acknowledge, [`Error::InvalidSubject`].
    pub async fn publish_durable(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<u64> {
        subject::validate_subject(subject)?;
        match &self.engine {
            Engine::Memory(b) => b.publish_durable(subject, payload, msg_id),
            Engine::Nats(b) => b.publish_durable(subject, payload, msg_id).await,
        }
    }

    /// Stores many messages, pipelined: sends all, then waits for every acknowledgement.
    /// Returns once all are stored.
    ///
    /// # Errors
    /// As [`Bus::publish_durable`]; on error some messages may have been stored (publish
    /// with `msg_id`s and retry to make the retry idempotent).
    pub async fn publish_durable_batch(
        &self,
        messages: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<()> {
        for (subject, _, _) in &messages {
            subject::validate_subject(subject)?;
        }
        match &self.engine {
            Engine::Memory(b) => b.publish_durable_batch(messages),
            Engine::Nats(b) => b.publish_durable_batch(messages).await,
        }
    }

    /// Binds to (creating if needed) the durable consumer `cfg.durable` on `stream`.
    ///
    /// # Errors
    /// The stream does not exist, or the server refuses the consumer.
    pub async fn consumer(&self, stream: &str, cfg: &ConsumerConfig) -> Result<Consumer> {
        cfg.validate()?;
        let inner = match &self.engine {
            Engine::Memory(b) => ConsumerInner::Memory(b.consumer(stream, cfg)?),
            Engine::Nats(b) => ConsumerInner::Nats(b.consumer(stream, cfg).await?),
        };
        Ok(Consumer { inner })
    }
}

impl Subscription {
    /// The next message; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Message> {
        match &mut self.inner {
            SubscriptionInner::Memory(rx) => rx.recv().await,
            SubscriptionInner::Nats(sub) => sub.next().await,
        }
    }
}

impl Message {
    /// Answers a request. A message without a reply handle is ignored.
    ///
    /// # Errors
    /// The connection is closed.
    pub async fn respond(self, payload: Bytes) -> Result<()> {
        match self.reply {
            None => Ok(()),
            Some(Reply::Memory(tx)) => {
                let _ = tx.try_send(payload); // the requester may have timed out or been answered
                Ok(())
            }
            Some(Reply::Nats { client, subject }) => nats::respond(&client, subject, payload).await,
        }
    }

    /// Whether the sender waits for [`Message::respond`].
    pub fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }
}

impl Consumer {
    /// Up to `max` messages; waits at most `wait` (capped at [`MAX_WAIT`]) for the first one,
    /// returns early when some are available. An empty vector means nothing arrived in time.
    ///
    /// Cancelling a fetch (e.g. in a `select!` on shutdown) loses nothing: on memory it is
    /// cancel-safe; on NATS a message the server was already sending stays in flight and is
    /// redelivered after `ack_wait`.
    ///
    /// # Errors
    /// The stream or consumer was deleted, or the connection is closed.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let wait = wait.min(MAX_WAIT);
        match &mut self.inner {
            ConsumerInner::Memory(c) => c.fetch(max, wait).await,
            ConsumerInner::Nats(c) => c.fetch(max, wait).await,
        }
    }
}

impl Delivery {
    /// Acknowledges: the message will not be delivered again. On NATS this waits for the
    /// server's confirmation (one round trip): ack a batch concurrently to hide it. Acking
    /// twice is harmless.
    ///
    /// # Errors
    /// The connection is closed (the message will then be redelivered).
    pub async fn ack(&self) -> Result<()> {
        match &self.acker {
            Acker::Memory(a) => a.ack(),
            Acker::Nats(m) => nats::ack(m).await,
        }
    }

    /// Negative ack: deliver again after `delay` (capped at [`MAX_WAIT`]).
    ///
    /// # Errors
    /// The connection is closed.
    pub async fn nak(&self, delay: Duration) -> Result<()> {
        let delay = delay.min(MAX_WAIT);
        match &self.acker {
            Acker::Memory(a) => a.nak(delay),
            Acker::Nats(m) => nats::nak(m, delay).await,
        }
    }
}
