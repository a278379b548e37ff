//! Where accepted events go before the collector answers 202: the durable stream (NATS
//! JetStream) or, in embedded mode, the store's outbox table, or (`--fold`) straight into the
//! read model.
//!
//! Requests hand their batch to one writer task through a bounded queue; the writer takes
//! everything queued (group commit: one transaction or one pipelined publish for many
//! requests) and answers each request once its batch is stored. A full queue is the
//! saturation signal: the request is shed with 503 + `Retry-After`, counted and logged.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use switchboard_bus::{Bus, Bytes, StreamConfig};
use switchboard_core::{Ctx, describe_error};
use switchboard_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::event::Event;
use crate::rejection::Rejection;
use crate::{outbox, readmodel, worker};

/// Durable stream holding accepted batches.
pub const STREAM: &str = "TRACKER_EVENTS";
/// Subject batches are published on.
pub const SUBJECT: &str = "tracker.events";
/// Most requests stored by one group commit.
const MAX_GROUP: usize = 256;
/// Room left in each bus message for its headers (the message id) below the bus's
/// `max_payload`.
const HEADER_ROOM: usize = 1024;

/// Where the journal stores batches.
#[derive(Clone)]
pub enum Sink {
    /// Embedded mode: the `tracker_outbox` table.
    Outbox(Store),
    /// Embedded mode in one process (`tracker collector --fold`): each group commit folds
    /// its events into the read model in one transaction, the worker's work without the
    /// outbox round trip (no JSON written and read back, no delete). An acknowledged event is
    /// then already in the reports; no worker is needed.
    Fold(Store),
    /// Distributed mode: the JetStream stream [`STREAM`].
    Stream(Bus),
    /// Accepts and forgets: only for the benchmark's "HTTP + validation" reference.
    Discard,
}

impl Sink {
    /// The outbox for a memory bus (not durable), the stream otherwise.
    pub fn for_deployment(bus: &Bus, store: &Store) -> Self {
        if bus.is_process_local() { Self::Outbox(store.clone()) } else { Self::Stream(bus.clone()) }
    }

    /// Creates the stream when the sink is one.
    ///
    /// # Errors
    /// The bus refuses the stream.
    pub async fn prepare(&self) -> crate::Result<()> {
        if let Self::Stream(bus) = self {
            bus.ensure_stream(&stream_config()).await?;
        }
        Ok(())
    }

    /// Largest journal body one stored message may carry: a request's events are split
    /// across as many messages as the bus's `max_payload` requires, so whatever the
    /// collector's own limits accept, the journal stores.
    fn max_chunk_bytes(&self) -> usize {
        match self {
            Self::Stream(bus) => {
                bus.max_payload().map_or(usize::MAX, |max| max.saturating_sub(HEADER_ROOM))
            }
            Self::Outbox(_) | Self::Fold(_) | Self::Discard => usize::MAX,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Outbox(_) => "outbox",
            Self::Fold(_) => "fold",
            Self::Stream(_) => "stream",
            Self::Discard => "discard",
        }
    }
}

/// The stream's configuration: unlimited, because a full stream would discard the oldest
/// accepted events — saturation is signalled to clients with 503 instead.
pub fn stream_config() -> StreamConfig {
    StreamConfig::new(STREAM, [SUBJECT])
}

pub(crate) struct Entry {
    payload: Payload,
    events: usize,
    done: oneshot::Sender<Result<(), String>>,
}

/// A request's events as the sink stores them.
enum Payload {
    /// JSON arrays, each with its event count: one chunk unless the encoded batch is larger
    /// than [`Sink::max_chunk_bytes`].
    Encoded(Vec<(String, usize)>),
    /// The events themselves, for [`Sink::Fold`].
    Events(Vec<Event>),
}

impl Payload {
    fn take_chunks(&mut self) -> Vec<(String, usize)> {
        match self {
            Self::Encoded(chunks) => std::mem::take(chunks),
            Self::Events(_) => Vec::new(),
        }
    }
}

/// Handle to the journal writer. Cheap to clone; the writer stops (after storing everything
/// queued) once every handle is dropped.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Entry>,
    max_chunk: usize,
    /// The sink takes events, not JSON ([`Sink::Fold`]).
    folds: bool,
    last_shed_log_ms: Arc<AtomicI64>,
}

impl Journal {
    /// Starts the writer task on `ctx` with a queue of `capacity` requests.
    pub fn start(sink: Sink, capacity: usize, ctx: &Ctx) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let max_chunk = sink.max_chunk_bytes();
        let folds = matches!(sink, Sink::Fold(_));
        ctx.spawn(write_loop(sink, rx));
        Self { tx, max_chunk, folds, last_shed_log_ms: Arc::new(AtomicI64::new(0)) }
    }

    /// Stores `events` durably; returns once they are.
    ///
    /// # Errors
    /// [`Rejection::Saturated`] when the queue is full, [`Rejection::Unavailable`] when the
    /// sink failed (nothing of this batch is then acknowledged).
    pub async fn append(&self, events: Vec<Event>, now_ms: i64) -> Result<(), Rejection> {
        let count = events.len();
        let payload = if self.folds {
            Payload::Events(events)
        } else {
            Payload::Encoded(
                encode(&events, self.max_chunk)
                    .map_err(|e| Rejection::Unavailable(format!("encoding events: {e}")))?,
            )
        };
        let (done, answer) = oneshot::channel();
        let entry = Entry { payload, events: count, done };
        if let Err(e) = self.tx.try_send(entry) {
            metrics::counter!("tracker_collector_shed_events_total").increment(count as u64);
            // One line per second at most: a saturated collector sheds thousands per second.
            let last = self.last_shed_log_ms.load(Ordering::Relaxed);
            if now_ms - last >= 1000
                && self
                    .last_shed_log_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let closed = matches!(e, mpsc::error::TrySendError::Closed(_));
                tracing::warn!(closed, "journal queue full: shedding requests with 503");
            }
            return Err(Rejection::Saturated);
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Rejection::Unavailable(why)),
            Err(_) => Err(Rejection::Unavailable("journal writer stopped".to_owned())),
        }
    }
}

#[cfg(test)]
impl Journal {
    /// A journal whose queue nobody drains: requests stay queued (saturation tests).
    pub(crate) fn stalled(capacity: usize) -> (Self, mpsc::Receiver<Entry>) {
        let (tx, rx) = mpsc::channel(capacity);
        let shed_log = Arc::new(AtomicI64::new(0));
        (Self { tx, max_chunk: usize::MAX, folds: false, last_shed_log_ms: shed_log }, rx)
    }
}

async fn write_loop(sink: Sink, mut rx: mpsc::Receiver<Entry>) {
    let label = sink.label();
    let mut group = Vec::with_capacity(MAX_GROUP);
    // Runs until every Journal handle is gone: the HTTP server has finished its in-flight
    // requests, so everything they queued is stored before the task ends (graceful drain).
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        metrics::gauge!("tracker_journal_queue_depth").set(rx.len() as f64);
        let started = std::time::Instant::now();
        let outcome = store_group(&sink, &mut group).await;
        metrics::histogram!("tracker_journal_write_seconds", "sink" => label)
            .record(started.elapsed().as_secs_f64());
        let events: usize = group.iter().map(|e| e.events).sum();
        match &outcome {
            Ok(()) => metrics::counter!("tracker_journal_events_total", "sink" => label)
                .increment(events as u64),
            Err(why) => tracing::error!(sink = label, events, error = %why, "journal write failed"),
        }
        for entry in group.drain(..) {
            let _ = entry.done.send(outcome.clone()); // the client may have gone away
        }
    }
    tracing::debug!(sink = label, "journal writer stopped");
}

/// `events` as JSON arrays of at most `max_bytes` each (a single event is never split; events
/// are a few hundred bytes at most, far below any bus's limit).
fn encode(events: &[Event], max_bytes: usize) -> serde_json::Result<Vec<(String, usize)>> {
    let whole = serde_json::to_string(events)?;
    if whole.len() <= max_bytes {
        return Ok(vec![(whole, events.len())]);
    }
    let mut chunks = Vec::new();
    let (mut body, mut n) = (String::from("["), 0);
    for event in events {
        let one = serde_json::to_string(event)?;
        if n > 0 && body.len() + 1 + one.len() + 1 > max_bytes {
            body.push(']');
            chunks.push((std::mem::replace(&mut body, String::from("[")), n));
            n = 0;
        }
        if n > 0 {
            body.push(',');
        }
        body.push_str(&one);
        n += 1;
    }
    body.push(']');
    chunks.push((body, n));
    Ok(chunks)
}

/// Stores the group; bodies are moved out (each entry keeps only its answer channel).
async fn store_group(sink: &Sink, group: &mut [Entry]) -> Result<(), String> {
    match sink {
        Sink::Discard => Ok(()),
        Sink::Outbox(store) => {
            let entries: Vec<(String, usize)> =
                group.iter_mut().flat_map(|e| e.payload.take_chunks()).collect();
            let now = switchboard_core::Clock::now_ms(&switchboard_core::SystemClock);
            outbox::append(store, &entries, now).await.map_err(|e| describe_error(&e))
        }
        Sink::Fold(store) => {
            let mut events = Vec::with_capacity(group.iter().map(|e| e.events).sum());
            for entry in group.iter_mut() {
                if let Payload::Events(batch) = &mut entry.payload {
                    events.append(batch);
                }
            }
            // The worker's work, counted in the worker's metrics whoever does it.
            let started = std::time::Instant::now();
            let fresh =
                readmodel::fold_batch(store, &events).await.map_err(|e| describe_error(&e))?;
            worker::record(started, events.len() as u64, fresh);
            Ok(())
        }
        Sink::Stream(bus) => {
            // A message id per batch: a publish retried by the client library is stored once.
            let messages = group
                .iter_mut()
                .flat_map(|e| e.payload.take_chunks())
                .map(|(body, _)| {
                    let id = uuid::Uuid::new_v4().to_string();
                    (SUBJECT.to_owned(), Bytes::from(body), Some(id))
                })
                .collect();
            bus.publish_durable_batch(messages).await.map_err(|e| describe_error(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> Vec<Event> {
        (0..n as i64)
            .map(|i| Event {
                id: uuid::Uuid::new_v4().to_string(),
                object_id: i,
                object_type: "user".into(),
                action: "view".into(),
                subject_id: i * 7,
                subject_type: "article".into(),
                ts_ms: 1_700_000_000_000 + i,
                received_ms: 1_700_000_000_000,
            })
            .collect()
    }

    #[test]
    fn a_batch_within_the_bus_limit_is_one_chunk() {
        let evs = events(100);
        let chunks = encode(&evs, usize::MAX).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].1, 100);
        assert_eq!(serde_json::from_str::<Vec<Event>>(&chunks[0].0).unwrap(), evs);
    }

    #[test]
    fn a_larger_batch_is_split_in_order_below_the_limit() {
        let evs = events(10_000);
        for max in [200, 4096, 1 << 20] {
            let chunks = encode(&evs, max).unwrap();
            assert!(chunks.len() > 1, "{max}");
            let mut back = Vec::new();
            for (body, n) in &chunks {
                assert!(body.len() <= max, "{} > {max}", body.len());
                let part: Vec<Event> = serde_json::from_str(body).unwrap();
                assert_eq!(part.len(), *n);
                back.extend(part);
            }
            assert_eq!(back, evs);
        }
    }
}
