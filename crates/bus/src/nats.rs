//! NATS engine behind `nats://host:port`: core NATS for pub/sub and request/reply,
//! JetStream for durable streams and pull consumers ([`consumer`]).
//!
//! Written against nats-server 2.9: no 2.10+ API is used (async-nats is built without its
//! `server_2_10`+ features). The client reconnects on its own; connection events are logged,
//! and messages a slow subscriber loses in the client are counted in `bus_dropped_total`.
mod consumer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, Request};
use bytes::Bytes;
use futures::StreamExt;
use switchboard_core::backoff::Backoff;

pub(crate) use consumer::{NatsConsumer, ack, nak};

use crate::message::{Reply, SubscriptionInner};
use crate::shed::Shed;
use crate::{Error, Message, Result, StreamConfig, Subscription};

/// Publish acknowledgements awaited at once by a batch publish. Bounded so a huge batch does
/// not exhaust async-nats' in-flight ack permits (5,000) and stays friendly to the server.
const PIPELINE_WINDOW: usize = 1_024;

/// How long [`NatsBus::connect`] waits for a server that is not reachable yet (the store's
/// `DEFAULT_CONNECT_WAIT` for PostgreSQL is the same).
pub(crate) const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Client options: the credentials, connection events logged, slow-subscriber drops counted.
fn options(credentials: Option<&Credentials>, server: &str, dropped: &Arc<Shed>) -> ConnectOptions {
    let (dropped, server) = (Arc::clone(dropped), server.to_owned());
    let options = match credentials {
        Some(Credentials::UserPassword(user, pass)) => {
            ConnectOptions::with_user_and_password(user.clone(), pass.clone())
        }
        Some(Credentials::Token(token)) => ConnectOptions::with_token(token.clone()),
        None => ConnectOptions::new(),
    };
    options.name("switchboard").event_callback(move |event| {
        let dropped = Arc::clone(&dropped);
        let server = server.clone();
        async move {
            match event {
                Event::SlowConsumer(_) => dropped.record(1),
                Event::Connected => tracing::info!(%server, "nats connected"),
                Event::Disconnected => {
                    tracing::warn!(%server, "nats disconnected; reconnecting");
                }
                other => tracing::warn!(%server, event = %other, "nats event"),
            }
        }
    })
}

/// A connection to NATS. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct NatsBus {
    client: async_nats::Client,
    /// Boxed behind an Arc: the context is large and every consumer handle keeps one.
    js: Arc<jetstream::Context>,
}

/// A core NATS subscription; keeps the client to answer requests.
pub(crate) struct NatsSubscription {
    client: async_nats::Client,
    sub: async_nats::Subscriber,
}

fn engine(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("{context}: {e}"))
}

/// What a NATS URL may carry before the host: `user:password@` or a `token@`.
#[derive(Debug, PartialEq)]
enum Credentials {
    UserPassword(String, String),
    Token(String),
}

/// `url` (one server or a comma-separated list) without credentials, and the credentials of
/// the first server that has them.
fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let mut found = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let (scheme, rest) = server.split_once("://").unwrap_or(("", server));
            let host_start = rest.find('/').unwrap_or(rest.len());
            let Some((userinfo, host)) = rest[..host_start].rsplit_once('@') else {
                return server.to_owned();
            };
            if found.is_none() {
                found = Some(match userinfo.split_once(':') {
                    Some((user, pass)) => Credentials::UserPassword(user.into(), pass.into()),
                    None => Credentials::Token(userinfo.into()),
                });
            }
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}{host}{}", &rest[host_start..])
        })
        .collect();
    (servers.join(","), found)
}

impl NatsBus {
    /// The server's `max_payload`, as it announced on connect.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Connects to `url`, retrying a server that is not reachable yet (refused, timed out,
    /// name not resolvable: still starting, e.g. beside us in docker compose) for up to
    /// [`CONNECT_WAIT`] with an info line per attempt — the same wait the store gives
    /// PostgreSQL. Other failures (bad credentials, TLS) fail at once.
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let server = switchboard_core::redact::url(url);
        let dropped =
            Arc::new(Shed::new("bus_dropped_total", "nats", "slow_subscriber", server.clone()));
        // Credentials go to the client as options, never inside the URL it keeps: the URL
        // appears in its own debug logs.
        let (servers, credentials) = split_credentials(url);
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let client = loop {
            match options(credentials.as_ref(), &server, &dropped).connect(servers.as_str()).await {
                Ok(client) => break client,
                Err(e) => {
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let unreachable = matches!(
                        e.kind(),
                        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns
                    );
                    let Some(wait) = backoff.next_delay_within(remaining).filter(|_| unreachable)
                    else {
                        return Err(engine(&format!("connecting to {server}"), e));
                    };
                    tracing::info!(%server, error = %switchboard_core::describe_error(&e), "bus not reachable yet, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let js = Arc::new(jetstream::new(client.clone()));
        Ok(Self { client, js })
    }

    pub(crate) async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        self.client.publish(subject.to_owned(), payload).await.map_err(|e| engine("publish", e))
    }

    pub(crate) async fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Subscription> {
        let sub = match group {
            None => self.client.subscribe(subject.to_owned()).await,
            Some(g) => self.client.queue_subscribe(subject.to_owned(), g.to_owned()).await,
        }
        .map_err(|e| engine("subscribe", e))?;
        // One round trip so the server knows the interest before we return: a publish from
        // another connection right after `subscribe` must reach this subscriber.
        self.client.flush().await.map_err(|e| engine("subscribe flush", e))?;
        let inner = NatsSubscription { client: self.client.clone(), sub };
        Ok(Subscription { inner: SubscriptionInner::Nats(inner) })
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let request = Request::new().payload(payload).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(reply) => Ok(reply.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => Error::NoResponders(subject.to_owned()),
                RequestErrorKind::TimedOut => {
                    Error::Timeout(format!("no reply on {subject} within {timeout:?}"))
                }
                _ => engine("request", e),
            }),
        }
    }

    pub(crate) async fn ensure_stream(&self, cfg: &StreamConfig) -> Result<()> {
        let limit = |v: Option<u64>| v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let max_age = cfg.max_age.unwrap_or(Duration::ZERO);
        // JetStream refuses a dedup window longer than max_age.
        let duplicate_window = if max_age.is_zero() {
            cfg.duplicate_window
        } else {
            cfg.duplicate_window.min(max_age)
        };
        let config = stream::Config {
            name: cfg.name.clone(),
            subjects: cfg.subjects.clone(),
            max_messages: limit(cfg.max_messages),
            max_bytes: limit(cfg.max_bytes),
            max_age,
            duplicate_window,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        match self.js.create_or_update_stream(config).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.kind() {
                CreateStreamErrorKind::JetStream(js) => {
                    Error::config(format!("stream {}: {js}", cfg.name))
                }
                _ => engine(&format!("ensuring stream {}", cfg.name), e),
            }),
        }
    }

    /// Sends one message; the returned future resolves to its stream sequence once stored.
    async fn send_durable(
        &self,
        subject: String,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<PublishAckFuture> {
        let mut publish = jetstream::message::PublishMessage::build().payload(payload);
        if let Some(id) = msg_id {
            publish = publish.message_id(id);
        }
        self.js.send_publish(subject, publish).await.map_err(|e| publish_error(&e))
    }

    pub(crate) async fn publish_durable(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<u64> {
        await_ack(self.send_durable(subject.to_owned(), payload, msg_id).await?).await
    }

    /// Pipelined: keeps up to [`PIPELINE_WINDOW`] publishes in flight, then awaits every ack.
    pub(crate) async fn publish_durable_batch(
        &self,
        messages: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<()> {
        let mut in_flight = VecDeque::with_capacity(messages.len().min(PIPELINE_WINDOW));
        for (subject, payload, msg_id) in messages {
            if in_flight.len() == PIPELINE_WINDOW
                && let Some(oldest) = in_flight.pop_front()
            {
                await_ack(oldest).await?;
            }
            in_flight.push_back(self.send_durable(subject, payload, msg_id.as_deref()).await?);
        }
        for ack in in_flight {
            await_ack(ack).await?;
        }
        Ok(())
    }

    pub(crate) async fn consumer(
        &self,
        stream: &str,
        cfg: &crate::ConsumerConfig,
    ) -> Result<NatsConsumer> {
        NatsConsumer::bind(self.clone(), stream, cfg).await
    }
}

/// The stream sequence once the server has stored the message.
async fn await_ack(ack: PublishAckFuture) -> Result<u64> {
    let ack = ack.await.map_err(|e| publish_error(&e))?;
    if ack.duplicate {
        metrics::counter!("bus_duplicates_total", "engine" => "nats").increment(1);
    }
    Ok(ack.sequence)
}

fn publish_error(e: &jetstream::context::PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::StreamNotFound => Error::NotFound(format!("no stream captures it: {e}")),
        PublishErrorKind::TimedOut => Error::Timeout(format!("publish ack: {e}")),
        _ => engine("durable publish", e),
    }
}

impl NatsSubscription {
    /// The next message, with a reply handle when the sender waits for one.
    pub(crate) async fn next(&mut self) -> Option<Message> {
        let m = self.sub.next().await?;
        Some(Message {
            subject: m.subject.to_string(),
            payload: m.payload,
            reply: m.reply.map(|subject| Reply::Nats { client: self.client.clone(), subject }),
        })
    }
}

/// Answers a request on its reply subject.
pub(crate) async fn respond(
    client: &async_nats::Client,
    subject: async_nats::Subject,
    payload: Bytes,
) -> Result<()> {
    client.publish(subject, payload).await.map_err(|e| engine("respond", e))
}

#[cfg(test)]
mod tests {
    use super::{Credentials, split_credentials};

    #[test]
    fn credentials_leave_the_url() {
        assert_eq!(
            split_credentials("nats://u:p@h:4222"),
            ("nats://h:4222".into(), Some(Credentials::UserPassword("u".into(), "p".into())))
        );
        assert_eq!(
            split_credentials("tls://tok@h,tls://h2:4222"),
            ("tls://h,tls://h2:4222".into(), Some(Credentials::Token("tok".into())))
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".into(), None)
        );
    }
}
