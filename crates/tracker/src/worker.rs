//! The worker: takes accepted batches from the journal (durable stream, or the outbox in
//! embedded mode), stores raw events and folds them into the read model, and acknowledges
//! only after the commit.
//!
//! Crash safety: the stream redelivers anything not acked (folding is idempotent on event
//! ids); the outbox is consumed in the same transaction that folds it. Several workers may
//! share the work: a shared durable consumer on the stream, `SKIP LOCKED` on PostgreSQL; in
//! embedded mode the workers of one process take turns (SQLite has one writer) and workers
//! of other processes meet at its writer lock.
use std::time::{Duration, Instant};

use switchboard_bus::{Bus, Consumer, ConsumerConfig, Delivery};
use switchboard_core::Ctx;
use switchboard_core::backoff::Backoff;
use switchboard_store::Store;

use crate::event::Event;
use crate::journal::{self, Sink};
use crate::{Error, Result};
use crate::{outbox, readmodel};

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Most journal entries (collector requests) folded per transaction.
    pub batch_entries: usize,
    /// Durable consumer name shared by all workers of one deployment.
    pub consumer: String,
    /// How long an unacked stream message waits before redelivery.
    pub ack_wait: Duration,
    /// Pause between polls of an empty outbox.
    pub idle_poll: Duration,
}

enum Source {
    Outbox,
    Stream(Box<Consumer>),
}

/// Runs one worker until `ctx.shutdown`; the batch in progress is finished first.
///
/// # Errors
/// The stream or consumer cannot be set up (later failures are logged and retried).
pub async fn run(cfg: WorkerConfig, bus: Bus, store: Store, ctx: Ctx) -> Result<()> {
    let mut source = match Sink::for_deployment(&bus, &store) {
        Sink::Stream(bus) => {
            bus.ensure_stream(&journal::stream_config()).await?;
            let mut cc = ConsumerConfig::new(cfg.consumer.clone());
            cc.ack_wait = cfg.ack_wait;
            Source::Stream(Box::new(bus.consumer(journal::STREAM, &cc).await?))
        }
        Sink::Outbox(_) | Sink::Fold(_) | Sink::Discard => Source::Outbox,
    };
    ctx.health.set_ready("tracker-worker", true);
    tracing::info!(bus = bus.kind(), "tracker worker consuming");
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    while !ctx.shutdown.is_cancelled() {
        let step = match &mut source {
            Source::Outbox => outbox_step(&store, &cfg).await,
            Source::Stream(consumer) => {
                let fetched = tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    r = consumer.fetch(cfg.batch_entries, Duration::from_millis(500)) => r,
                };
                match fetched {
                    // A batch still unfinished after --ack-wait is already being redelivered
                    // to another worker; and a store connection cut off mid-query (a network
                    // partition) would otherwise wait for TCP to give up, for many minutes,
                    // wedging this worker and its shutdown. Dropping the step drops that
                    // connection; the transaction never committed, so nothing is lost.
                    Ok(deliveries) => {
                        match tokio::time::timeout(cfg.ack_wait, stream_step(&store, deliveries))
                            .await
                        {
                            Ok(step) => step,
                            Err(_) => Err(Error::Stalled(cfg.ack_wait)),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        };
        let pause = match step {
            Ok(0) => cfg.idle_poll,
            Ok(_) => {
                backoff.reset();
                continue;
            }
            Err(e) => {
                metrics::counter!("tracker_worker_errors_total").increment(1);
                let wait = backoff.next_delay();
                tracing::warn!(error = %switchboard_core::describe_error(&e), retry_in = ?wait, "worker batch failed; will retry");
                wait
            }
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("tracker worker stopped");
    Ok(())
}

/// Folds one batch from the outbox; returns the number of entries taken.
async fn outbox_step(store: &Store, cfg: &WorkerConfig) -> Result<usize> {
    let started = Instant::now();
    let f = outbox::take_and_fold(store, cfg.batch_entries).await?;
    if f.entries > 0 {
        record(started, f.events, f.fresh);
    }
    Ok(f.entries as usize)
}

/// Folds the events of `deliveries` in one transaction, then acks them all.
async fn stream_step(store: &Store, deliveries: Vec<Delivery>) -> Result<usize> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let mut events: Vec<Event> = Vec::new();
    for d in &deliveries {
        match serde_json::from_slice::<Vec<Event>>(&d.payload) {
            Ok(batch) => events.extend(batch),
            Err(e) => {
                // Not from a collector of ours: it can never be folded, so retrying is
                // pointless. It is counted, logged with its position, and acked.
                metrics::counter!("tracker_worker_poison_total").increment(1);
                tracing::error!(stream_seq = d.stream_seq, error = %switchboard_core::describe_error(&e), "skipping undecodable message");
            }
        }
    }
    let fresh = readmodel::fold_batch(store, &events).await?;
    record(started, events.len() as u64, fresh);
    let acks = deliveries.iter().map(Delivery::ack);
    for (d, r) in deliveries.iter().zip(futures::future::join_all(acks).await) {
        if let Err(e) = r {
            // Harmless: the message comes back and folds to nothing.
            tracing::warn!(stream_seq = d.stream_seq, error = %switchboard_core::describe_error(&e), "ack failed; will be redelivered");
        }
    }
    Ok(deliveries.len())
}

/// Counts one folded batch (also the collector's `--fold`, which does a worker's work).
pub(crate) fn record(started: Instant, events: u64, fresh: u64) {
    metrics::counter!("tracker_worker_events_total").increment(events);
    metrics::counter!("tracker_worker_duplicates_total").increment(events - fresh);
    metrics::histogram!("tracker_worker_batch_seconds").record(started.elapsed().as_secs_f64());
}
