//! In-process engine: the embedded default behind `memory://`.
//!
//! Same semantics as the NATS engine, minus the network: subscriptions are bounded channels
//! (a full one drops the message and counts it), queue groups pick members round-robin,
//! streams keep messages in memory within their limits ([`stream`]), and durable pull
//! consumers track acks and redeliveries per durable name ([`consumer`]).
//!
//! Nothing survives the process: that is the point of the NATS engine.
mod consumer;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

pub(crate) use consumer::{MemoryAcker, MemoryConsumer};
use stream::Stream;

use crate::message::{Reply, SubscriptionInner};
use crate::shed::Shed;
use crate::subject::{matches, overlaps};
use crate::{ConsumerConfig, Error, Message, Result, StreamConfig, Subscription};

/// Messages buffered per subscriber before new ones are dropped (async-nats buffers 65,536
/// per subscription; in-process readers are closer, so less slack is needed).
pub(crate) const SUBSCRIBER_CAPACITY: usize = 8_192;

/// The in-memory bus. Cheap to clone; clones share everything.
#[derive(Clone, Default)]
pub(crate) struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// std Mutex: routing a publish is a short, non-async critical section.
    subs: Mutex<Registry>,
    /// Streams by name; each stream has its own lock so streams do not contend.
    streams: Mutex<HashMap<String, Arc<Stream>>>,
}

#[derive(Default)]
struct Registry {
    subs: Vec<Subscriber>,
    /// Round-robin cursor per queue group.
    cursors: HashMap<String, usize>,
}

struct Subscriber {
    pattern: String,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
    shed: Shed,
}

/// Locks a std mutex; a panic elsewhere must not wedge the bus, and every critical section
/// here leaves the state consistent, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBus {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        self.route(subject, &payload, None);
        Ok(())
    }

    pub(crate) fn subscribe(&self, pattern: &str, group: Option<&str>) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let what = match group {
            Some(g) => format!("{pattern} (queue {g})"),
            None => pattern.to_owned(),
        };
        let shed = Shed::new("bus_dropped_total", "memory", "slow_subscriber", what);
        let mut reg = lock(&self.inner.subs);
        reg.subs.retain(|s| !s.tx.is_closed());
        reg.subs.push(Subscriber {
            pattern: pattern.to_owned(),
            group: group.map(str::to_owned),
            tx,
            shed,
        });
        Subscription { inner: SubscriptionInner::Memory(rx) }
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        // Capacity 1: the first answer wins, later ones are ignored (as with NATS).
        let (tx, mut rx) = mpsc::channel(1);
        // Routing clones the sender; the original stays here so that responders dropping the
        // request unanswered ends in a timeout, as on NATS, not in a misleading early error.
        if self.route(subject, &payload, Some(&tx)) == 0 {
            return Err(Error::NoResponders(subject.to_owned()));
        }
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => {
                Err(Error::Timeout(format!("no reply on {subject} within {timeout:?}")))
            }
        }
    }

    /// Delivers to every matching plain subscriber and to one member per queue group.
    /// Returns how many subscriptions matched.
    fn route(&self, subject: &str, payload: &Bytes, reply: Option<&mpsc::Sender<Bytes>>) -> usize {
        let message = || Message {
            subject: subject.to_owned(),
            payload: payload.clone(),
            reply: reply.cloned().map(Reply::Memory),
        };
        let mut reg = lock(&self.inner.subs);
        let Registry { subs, cursors } = &mut *reg;
        subs.retain(|s| !s.tx.is_closed());
        let mut matched = 0;
        let mut groups: Vec<(&str, Vec<&Subscriber>)> = Vec::new();
        for sub in subs.iter().filter(|s| matches(&s.pattern, subject)) {
            matched += 1;
            match &sub.group {
                None => {
                    if sub.tx.try_send(message()).is_err() {
                        sub.shed.record(1);
                    }
                }
                Some(g) => match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((g, vec![sub])),
                },
            }
        }
        for (group, members) in groups {
            let cursor = cursors.entry(group.to_owned()).or_default();
            let start = *cursor;
            *cursor = cursor.wrapping_add(1);
            // The member whose turn it is gets the message; if its buffer is full the next
            // one does, so a group only sheds when every member is saturated.
            let delivered = (0..members.len())
                .map(|i| members[(start + i) % members.len()])
                .any(|m| m.tx.try_send(message()).is_ok());
            if !delivered {
                members[start % members.len()].shed.record(1);
            }
        }
        matched
    }

    pub(crate) fn ensure_stream(&self, cfg: &StreamConfig) -> Result<()> {
        let mut streams = lock(&self.inner.streams);
        for (name, other) in streams.iter().filter(|(name, _)| **name != cfg.name) {
            let theirs = other.subjects();
            if let Some((a, b)) = cfg
                .subjects
                .iter()
                .flat_map(|a| theirs.iter().map(move |b| (a, b)))
                .find(|(a, b)| overlaps(a, b))
            {
                return Err(Error::config(format!(
                    "stream {:?}: subject {a:?} overlaps {b:?} of stream {name:?}",
                    cfg.name
                )));
            }
        }
        match streams.get(&cfg.name) {
            Some(existing) => existing.reconfigure(cfg),
            None => {
                streams.insert(cfg.name.clone(), Arc::new(Stream::new(cfg.clone())));
            }
        }
        Ok(())
    }

    /// The stream capturing `subject`.
    fn stream_for(&self, subject: &str) -> Result<Arc<Stream>> {
        lock(&self.inner.streams)
            .values()
            .find(|s| s.captures(subject))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no stream captures subject {subject}")))
    }

    pub(crate) fn publish_durable(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<u64> {
        Ok(self.stream_for(subject)?.append(subject, payload, msg_id))
    }

    /// All-or-nothing: every subject is resolved to its stream before anything is stored.
    pub(crate) fn publish_durable_batch(
        &self,
        messages: Vec<(String, Bytes, Option<String>)>,
    ) -> Result<()> {
        let targets = messages
            .iter()
            .map(|(subject, _, _)| self.stream_for(subject))
            .collect::<Result<Vec<_>>>()?;
        for (stream, (subject, payload, msg_id)) in targets.into_iter().zip(messages) {
            stream.append(&subject, payload, msg_id.as_deref());
        }
        Ok(())
    }

    pub(crate) fn consumer(&self, stream: &str, cfg: &ConsumerConfig) -> Result<MemoryConsumer> {
        let stream = lock(&self.inner.streams)
            .get(stream)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stream {stream}")))?;
        MemoryConsumer::bind(stream, cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_subscriber_drops_and_counts_without_blocking_others() {
        let bus = MemoryBus::new();
        let mut slow = bus.subscribe("s", None);
        let mut fast = bus.subscribe("s", None);
        let n = SUBSCRIBER_CAPACITY + 10;
        for i in 0..n {
            bus.publish("s", Bytes::from(i.to_string())).expect("publish");
            // The fast reader keeps up, so it never sheds.
            let m = fast.next().await.expect("message");
            assert_eq!(m.payload, Bytes::from(i.to_string()));
        }
        let dropped: u64 = lock(&bus.inner.subs).subs.iter().map(|s| s.shed.total()).sum();
        assert_eq!(dropped, 10);
        // The slow reader kept the oldest messages, in order.
        let first = slow.next().await.expect("message");
        assert_eq!(first.payload, Bytes::from("0"));
    }

    #[tokio::test]
    async fn queue_group_round_robins_and_survives_a_leaving_member() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("q", Some("g"));
        let mut b = bus.subscribe("q", Some("g"));
        for i in 0..4 {
            bus.publish("q", Bytes::from(i.to_string())).expect("publish");
        }
        for (sub, want) in [(&mut a, ["0", "2"]), (&mut b, ["1", "3"])] {
            for w in want {
                assert_eq!(sub.next().await.expect("message").payload, Bytes::from(w));
            }
        }
        drop(b);
        bus.publish("q", Bytes::from("only-a")).expect("publish");
        assert_eq!(a.next().await.expect("message").payload, Bytes::from("only-a"));
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_unregistered() {
        let bus = MemoryBus::new();
        drop(bus.subscribe("x", None));
        let err = bus.request("x", Bytes::new(), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, Error::NoResponders(_)), "{err}");
    }
}
