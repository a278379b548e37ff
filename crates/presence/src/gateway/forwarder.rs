//! Forwards EVEN/ODD reports from all sessions of a gateway to the bus, in batches.
//!
//! Sessions hand reports over a bounded queue with `try_send`: a session never waits for the
//! bus. When the queue is full (the bus is down or slow) the report is shed, counted in
//! `presence_gateway_reports_shed_total` and logged — the client pings again next second, so a
//! shed report delays nothing by more than a second once the bus recovers. A batch is published
//! when it reaches `batch_max` reports or `batch_interval` has passed, durably and with a
//! `msg_id` (`<gateway>-<seq>`), so a retry after an ambiguous failure is stored once.
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::report::{Batch, Report, SUBJECT};

/// Where sessions put reports; `try_send` only.
pub type ReportSender = mpsc::Sender<Report>;

/// Batches reports from the queue onto the bus.
pub struct Forwarder {
    /// The gateway's id, stamped on every batch.
    pub gateway_id: String,
    /// Bus to publish on.
    pub bus: Bus,
    /// Largest batch.
    pub batch_max: usize,
    /// Longest a report waits for its batch.
    pub batch_interval: Duration,
}

impl Forwarder {
    /// Runs until every [`ReportSender`] is dropped (the sessions ended), then flushes.
    /// `shutdown` only bounds how long a failing publish is retried.
    pub async fn run(self, mut rx: mpsc::Receiver<Report>, shutdown: CancellationToken) {
        let mut buf = Vec::with_capacity(self.batch_max);
        let mut seq = 0u64;
        let mut timer = tokio::time::interval(self.batch_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, self.batch_max) => {
                    if n == 0 {
                        break;
                    }
                    if buf.len() >= self.batch_max {
                        seq += 1;
                        self.flush(&mut buf, seq, &shutdown).await;
                    }
                }
                _ = timer.tick() => {
                    if !buf.is_empty() {
                        seq += 1;
                        self.flush(&mut buf, seq, &shutdown).await;
                    }
                }
            }
        }
        if !buf.is_empty() {
            seq += 1;
            self.flush(&mut buf, seq, &shutdown).await;
        }
        tracing::info!(batches = seq, "report forwarder drained");
    }

    /// Publishes `buf` as batch `seq`, retrying with backoff; after shutdown gives up after a
    /// few attempts (counted and logged) so draining stays bounded.
    async fn flush(&self, buf: &mut Vec<Report>, seq: u64, shutdown: &CancellationToken) {
        let span =
            tracing::info_span!("presence.gateway.flush", reports = buf.len(), batch_seq = seq);
        let batch = Batch {
            gateway_id: self.gateway_id.clone(),
            batch_seq: seq,
            reports: std::mem::take(buf),
            trace_context: crate::trace::inject_map(&span),
            malformed: 0,
        };
        let payload = batch.encode();
        let msg_id = format!("{}-{seq}", self.gateway_id);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut attempts_after_shutdown = 0;
        let started = std::time::Instant::now();
        loop {
            let res = self
                .bus
                .publish_durable(SUBJECT, payload.clone(), Some(&msg_id))
                .instrument(span.clone())
                .await;
            match res {
                Ok(_) => {
                    metrics::counter!("presence_gateway_batches_total").increment(1);
                    metrics::counter!("presence_gateway_reports_forwarded_total")
                        .increment(batch.reports.len() as u64);
                    metrics::histogram!("presence_gateway_flush_seconds")
                        .record(started.elapsed().as_secs_f64());
                    buf.clear();
                    return;
                }
                Err(e) => {
                    metrics::counter!("presence_gateway_publish_errors_total").increment(1);
                    if shutdown.is_cancelled() {
                        attempts_after_shutdown += 1;
                        if attempts_after_shutdown >= 3 {
                            metrics::counter!("presence_gateway_reports_dropped_total")
                                .increment(batch.reports.len() as u64);
                            tracing::error!(error = %switchboard_core::describe_error(&e), reports = batch.reports.len(), "bus unavailable while draining; batch dropped");
                            return;
                        }
                    }
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %switchboard_core::describe_error(&e), retry_in = ?wait, "publishing a report batch failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
