//! Durable streams: their configuration, consumers and deliveries.
use std::time::Duration;

use crate::{Bytes, MAX_WAIT, Result, memory, nats};

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
    pub(crate) inner: ConsumerInner,
}

pub(crate) enum ConsumerInner {
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
    pub(crate) acker: Acker,
}

pub(crate) enum Acker {
    Memory(memory::MemoryAcker),
    Nats(Box<async_nats::jetstream::Message>),
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
