//! Shedding: where a bounded buffer is full, a message is dropped on purpose.
//!
//! Every shed point counts its drops in a metric and says so in the log — at most once per
//! [`LOG_EVERY`], with the number dropped since the last line, so a persistently slow reader
//! cannot flood the log.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Minimum time between two log lines of one shed point.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One place where messages may be shed (a subscriber's buffer, a bounded stream).
pub(crate) struct Shed {
    /// Metric name, e.g. `bus_dropped_total`.
    metric: &'static str,
    /// `memory` or `nats`.
    engine: &'static str,
    /// Why messages are dropped here, e.g. `slow_subscriber`; a metric label.
    reason: &'static str,
    /// What is shedding (a subject pattern, a stream name), for the log line only: metric
    /// labels stay low-cardinality.
    what: String,
    /// std Mutex: held for a few instructions, never across an await.
    log: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    total: u64,
    unlogged: u64,
    last_line: Option<Instant>,
}

impl Shed {
    /// A shed point counted in `metric{engine,reason}`.
    pub(crate) fn new(
        metric: &'static str,
        engine: &'static str,
        reason: &'static str,
        what: impl Into<String>,
    ) -> Self {
        Self { metric, engine, reason, what: what.into(), log: Mutex::default() }
    }

    /// Records `n` dropped messages.
    pub(crate) fn record(&self, n: u64) {
        if n == 0 {
            return;
        }
        metrics::counter!(self.metric, "engine" => self.engine, "reason" => self.reason)
            .increment(n);
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.total += n;
        log.unlogged += n;
        let now = Instant::now();
        if log.last_line.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(
                engine = self.engine,
                reason = self.reason,
                what = %self.what,
                dropped = log.unlogged,
                dropped_total = log.total,
                "bus shed messages: buffer full"
            );
            log.unlogged = 0;
            log.last_line = Some(now);
        }
    }

    /// Messages dropped here so far.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }
}
