//! JetStream durable pull consumers.
//!
//! The durable consumer lives in the server, so its position and unacked messages survive a
//! worker crash, a reconnect or a server restart; every process binding the same durable name
//! shares it. Fetching speaks the pull protocol directly (`$JS.API.CONSUMER.MSG.NEXT`) to
//! give [`crate::Consumer::fetch`] its contract — return as soon as *some* messages are there:
//! 1. a `no_wait` pull for up to `max` takes what is available now;
//! 2. if that was nothing, one pull for a single message waits up to `wait` (the server ends
//!    it the moment a message arrives, so no pull is left outstanding to strand messages);
//! 3. and, if one came, a second `no_wait` pull takes whatever else is ready.
//!
//! Status replies end a pull: 404 (nothing available), 408 (expired), 409 (for example
//! max_ack_pending reached: backpressure, not an error). 503 means the consumer is gone.
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::message::AckKind;
use async_nats::{StatusCode, jetstream};
use futures::StreamExt;
use tokio::time::Instant;

use super::{NatsBus, engine};
use crate::stream::Acker;
use crate::{ConsumerConfig, DeliverFrom, Delivery, Error, Result};

/// Extra time a pull may take beyond its `expires` before we stop listening: the server's
/// 408 normally ends it first; this only covers a lost status message.
const PULL_GRACE: Duration = Duration::from_secs(2);

/// Shorter waits are not worth a waiting pull: the server rounds tiny expiries away.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Server-side expiry of a `no_wait` pull. nats-server 2.9 ends a `no_wait` pull with 404 when
/// nothing is pending, but one cut short by `max_ack_pending` stays open (and would receive
/// messages later, after we stopped listening); this bounds it.
const NO_WAIT_EXPIRY: Duration = Duration::from_millis(50);

/// A handle on a JetStream durable pull consumer.
pub(crate) struct NatsConsumer {
    bus: NatsBus,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`.
    next_subject: String,
    durable: String,
}

impl NatsConsumer {
    /// Binds to the durable consumer, creating it if needed. An existing consumer keeps its
    /// position and start policy (`deliver_from` only applies on creation, as in the memory
    /// engine); a changed `ack_wait` or `max_ack_pending` is applied.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the stream does not exist, [`Error::Config`] if the filter
    /// differs from the existing consumer's or the server refuses the configuration.
    pub(crate) async fn bind(bus: NatsBus, stream: &str, cfg: &ConsumerConfig) -> Result<Self> {
        let handle = bus.js.get_stream(stream).await.map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.code() == 404 => {
                Error::NotFound(format!("stream {stream}"))
            }
            _ => engine(&format!("looking up stream {stream}"), e),
        })?;
        let refused = |e: &dyn std::fmt::Display| {
            Error::config(format!("consumer {} on {stream}: {e}", cfg.durable))
        };
        let filter = cfg.filter_subject.clone().unwrap_or_default();
        let max_ack_pending = i64::try_from(cfg.max_ack_pending).unwrap_or(i64::MAX);
        match handle.consumer_info(&cfg.durable).await {
            Ok(info) => {
                let mut current = info.config;
                if current.filter_subject != filter {
                    return Err(refused(&format!(
                        "exists with filter {:?}",
                        current.filter_subject
                    )));
                }
                if current.ack_wait != cfg.ack_wait || current.max_ack_pending != max_ack_pending {
                    current.ack_wait = cfg.ack_wait;
                    current.max_ack_pending = max_ack_pending;
                    handle.create_consumer(current).await.map_err(|e| refused(&e))?;
                }
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let config = pull::Config {
                    durable_name: Some(cfg.durable.clone()),
                    filter_subject: filter,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: cfg.ack_wait,
                    max_ack_pending,
                    deliver_policy: deliver_policy(cfg.deliver_from)?,
                    ..Default::default()
                };
                handle.create_consumer(config).await.map_err(|e| refused(&e))?;
            }
            Err(e) => return Err(engine(&format!("looking up consumer {}", cfg.durable), e)),
        }
        Ok(Self {
            bus,
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", cfg.durable),
            durable: cfg.durable.clone(),
        })
    }

    pub(crate) async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut got = self.pull(max, None).await?;
        if got.is_empty() && wait >= MIN_WAIT {
            got = self.pull(1, Some(wait)).await?;
            if !got.is_empty() && max > 1 {
                // Failing here must not strand the message already in hand.
                match self.pull(max - 1, None).await {
                    Ok(more) => got.extend(more),
                    Err(e) => {
                        tracing::warn!(durable = %self.durable, error = %switchboard_core::describe_error(&e), "top-up pull failed")
                    }
                }
            }
        }
        let deliveries = got.into_iter().map(|m| self.delivery(m)).collect::<Result<Vec<_>>>()?;
        let redelivered = deliveries.iter().filter(|d| d.delivered > 1).count() as u64;
        if redelivered > 0 {
            metrics::counter!("bus_redelivered_total", "engine" => "nats").increment(redelivered);
        }
        Ok(deliveries)
    }

    /// One pull request: `no_wait` when `expires` is `None`. Listens until the server ends
    /// the request (or the batch is full), so no message can land after we stopped reading.
    async fn pull(
        &self,
        batch: usize,
        expires: Option<Duration>,
    ) -> Result<Vec<async_nats::Message>> {
        let inbox = self.bus.client.new_inbox();
        let mut replies = self
            .bus
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| engine("pull subscribe", e))?;
        let request = match expires {
            None => format!(
                r#"{{"batch":{batch},"no_wait":true,"expires":{}}}"#,
                NO_WAIT_EXPIRY.as_nanos()
            ),
            Some(d) => format!(r#"{{"batch":{batch},"expires":{}}}"#, d.as_nanos()),
        };
        self.bus
            .client
            .publish_with_reply(self.next_subject.clone(), inbox, request.into())
            .await
            .map_err(|e| engine("pull request", e))?;
        let deadline = Instant::now() + expires.unwrap_or(NO_WAIT_EXPIRY) + PULL_GRACE;
        let mut got = Vec::new();
        while got.len() < batch {
            let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
                Err(_) => {
                    tracing::warn!(durable = %self.durable, "pull ended without a status reply");
                    break;
                }
                Ok(None) => return Err(Error::Engine("connection closed during fetch".into())),
                Ok(Some(reply)) => reply,
            };
            match reply.status {
                None | Some(StatusCode::OK) => got.push(reply),
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(
                    StatusCode::NOT_FOUND | StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED,
                ) => {
                    break;
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(Error::NotFound(format!("consumer {}", self.durable)));
                }
                Some(status) => {
                    let why = reply.description.unwrap_or_default();
                    return Err(Error::Engine(format!("pull failed: {status} {why}")));
                }
            }
        }
        Ok(got)
    }

    fn delivery(&self, message: async_nats::Message) -> Result<Delivery> {
        let message = jetstream::Message { message, context: (*self.bus.js).clone() };
        let info = message.info().map_err(|e| engine("delivery metadata", e))?;
        let published_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let (stream_seq, delivered) =
            (info.stream_sequence, u64::try_from(info.delivered).unwrap_or(1));
        Ok(Delivery {
            subject: message.message.subject.to_string(),
            payload: message.message.payload.clone(),
            stream_seq,
            delivered,
            published_ms,
            acker: Acker::Nats(Box::new(message)),
        })
    }
}

fn deliver_policy(from: DeliverFrom) -> Result<DeliverPolicy> {
    Ok(match from {
        DeliverFrom::All => DeliverPolicy::All,
        DeliverFrom::New => DeliverPolicy::New,
        DeliverFrom::Time(ms) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| Error::config(format!("deliver_from time {ms}: {e}")))?,
        },
    })
}

/// Acknowledges and waits for the server to confirm, so `Ok` really means "not delivered
/// again" (one round trip; ack a batch concurrently to hide it).
pub(crate) async fn ack(m: &jetstream::Message) -> Result<()> {
    m.double_ack().await.map_err(|e| engine("ack", e))
}

/// Negative ack: redeliver after `delay`. Fire-and-forget: if it is lost, the message is
/// redelivered after `ack_wait` instead.
pub(crate) async fn nak(m: &jetstream::Message, delay: Duration) -> Result<()> {
    let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
    m.ack_with(kind).await.map_err(|e| engine("nak", e))
}
