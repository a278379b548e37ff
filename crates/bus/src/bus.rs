//! [`Bus`]: one handle over the two engines; every call validates, then dispatches.
use std::time::Duration;

use crate::message::Subscription;
use crate::stream::{Consumer, ConsumerConfig, ConsumerInner, StreamConfig};
use crate::{Bytes, Error, Result, memory, nats, subject};

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
