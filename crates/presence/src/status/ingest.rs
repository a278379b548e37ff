//! Consumes report batches from the durable bus stream into the last-seen window, and
//! checkpoints the window to the store.
//!
//! Ordering is what makes restarts exact: a delivery is acknowledged only after a snapshot that
//! includes it is stored. After a crash the replica loads its last snapshot and the bus
//! redelivers everything acknowledged later — recording is idempotent (max of last-seen), so
//! replays and duplicates never count anyone twice.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_bus::{Consumer, Delivery};
use switchboard_core::{Clock, Health};
use switchboard_store::Store;
use tokio_util::sync::CancellationToken;

use super::snapshot::{self, Snapshot};
use crate::report::Batch;
use crate::window::{LastSeen, Recorded};

/// How long one fetch waits: also the worst-case delay to notice shutdown.
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// The ingest loop of one status replica.
pub struct Ingest {
    /// The window the reader answers from.
    pub window: Arc<Mutex<LastSeen>>,
    /// "Now" for the window.
    pub clock: Arc<dyn Clock>,
    /// Where snapshots go.
    pub store: Store,
    /// This replica's snapshot key.
    pub replica: String,
    /// Time between snapshots (and acknowledgements).
    pub snapshot_interval: Duration,
    /// Checkpoint early once this many deliveries wait for their ack.
    pub max_pending: usize,
    /// Deliveries per fetch.
    pub fetch_max: usize,
    /// Readiness: set once the replica has caught up with the stream.
    pub health: Health,
}

impl Ingest {
    /// Runs until `shutdown`, then stores a final snapshot and acknowledges.
    pub async fn run(self, mut consumer: Consumer, shutdown: CancellationToken) {
        let mut pending: Vec<Delivery> = Vec::new();
        let mut last_checkpoint = Instant::now();
        let mut caught_up = false;
        // Not a select! on fetch: a fetch cancelled half-way could strand deliveries until
        // their ack wait. Each fetch is short instead, and shutdown is checked between them.
        while !shutdown.is_cancelled() {
            match consumer.fetch(self.fetch_max, FETCH_WAIT).await {
                Ok(deliveries) => {
                    if !caught_up && deliveries.len() < self.fetch_max {
                        caught_up = true;
                        self.health.set_ready("presence-status-ingest", true);
                        tracing::info!("status replica caught up with the report stream");
                    }
                    for d in deliveries {
                        self.apply(&d);
                        pending.push(d);
                    }
                }
                Err(e) => {
                    metrics::counter!("presence_status_fetch_errors_total").increment(1);
                    tracing::warn!(error = %switchboard_core::describe_error(&e), "fetching reports failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
            if last_checkpoint.elapsed() >= self.snapshot_interval
                || pending.len() >= self.max_pending
            {
                self.checkpoint(&mut pending).await;
                last_checkpoint = Instant::now();
            }
        }
        self.checkpoint(&mut pending).await;
        tracing::info!("status ingest drained");
    }

    /// Decodes one bus message and records its reports.
    pub fn apply(&self, d: &Delivery) {
        let batch = match Batch::decode(&d.payload) {
            Ok(b) => b,
            Err(e) => {
                // A message that can never decode is skipped (and acked with the next
                // checkpoint), not retried forever.
                metrics::counter!("presence_status_bad_messages_total").increment(1);
                tracing::warn!(error = %switchboard_core::describe_error(&e), stream_seq = d.stream_seq, "undecodable report batch skipped");
                return;
            }
        };
        let span = tracing::info_span!("presence.status.apply", gateway = %batch.gateway_id, batch_seq = batch.batch_seq, reports = batch.reports.len());
        crate::trace::set_parent_from_map(&span, &batch.trace_context);
        let _entered = span.enter();
        if batch.malformed > 0 {
            metrics::counter!("presence_status_bad_reports_total")
                .increment(batch.malformed as u64);
            tracing::warn!(count = batch.malformed, "malformed reports skipped");
        }
        let now = self.clock.now_ms();
        let (mut new, mut expired) = (0u64, 0u64);
        {
            let mut w = lock(&self.window);
            for r in &batch.reports {
                match w.record(r.client, r.seen_ms, now) {
                    Recorded::New => new += 1,
                    Recorded::Expired => expired += 1,
                    Recorded::Refreshed | Recorded::Unchanged => {}
                }
            }
        }
        metrics::counter!("presence_status_reports_total").increment(batch.reports.len() as u64);
        metrics::counter!("presence_status_users_arrived_total").increment(new);
        metrics::counter!("presence_status_reports_expired_total").increment(expired);
    }

    /// Evicts, snapshots, stores, then acknowledges `pending`. On a store failure the
    /// deliveries stay pending (the bus redelivers them if we crash before the next try).
    async fn checkpoint(&self, pending: &mut Vec<Delivery>) {
        let now = self.clock.now_ms();
        let snap = {
            let mut w = lock(&self.window);
            w.evict(now);
            metrics::gauge!("presence_status_online_users").set(w.online(now) as f64);
            metrics::gauge!("presence_status_tracked_users").set(w.tracked() as f64);
            Snapshot { taken_ms: now, entries: w.entries().collect() }
        };
        let started = Instant::now();
        if let Err(e) = snapshot::save(&self.store, &self.replica, &snap).await {
            metrics::counter!("presence_status_snapshot_errors_total").increment(1);
            tracing::warn!(error = %switchboard_core::describe_error(&e), pending = pending.len(), "storing the snapshot failed; acks deferred");
            return;
        }
        metrics::histogram!("presence_status_snapshot_seconds")
            .record(started.elapsed().as_secs_f64());
        for d in pending.drain(..) {
            if let Err(e) = d.ack().await {
                // Redelivered later and recorded again: harmless, recording is idempotent.
                tracing::debug!(error = %switchboard_core::describe_error(&e), "ack failed");
            }
        }
    }
}

/// Locks the window. A poisoned lock means a panic mid-update of plain counters; the data is
/// still usable, so carry on rather than take the replica down.
pub fn lock(w: &Mutex<LastSeen>) -> std::sync::MutexGuard<'_, LastSeen> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
