//! Reports waiting to be written to the server.
//!
//! The reader closes windows and pushes reports here without ever waiting on the socket; a
//! per-connection writer task takes them in order. A report leaves the outbox only after it
//! was written successfully, so a report due while disconnected (or whose write failed) is
//! sent after the next reconnect. The outbox is bounded: when full, the oldest report is
//! dropped, counted (`aggregator_reports_dropped_total`) and logged.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A report ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Sequence number, to acknowledge exactly this report.
    pub(crate) seq: u64,
    /// Start of the window it covers (Unix ms), for logs.
    pub(crate) window: i64,
    /// The JSON text frame.
    pub(crate) text: Arc<str>,
}

/// Bounded FIFO of unsent reports, shared by the reader and the writer.
#[derive(Debug)]
pub(crate) struct Outbox {
    // A std Mutex: held for a push or a peek, never across an await.
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Report>,
    next_seq: u64,
}

impl Outbox {
    /// An outbox holding at most `capacity` reports (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { queue: Mutex::default(), ready: Notify::new(), capacity: capacity.max(1) }
    }

    /// Queues a report; returns the report dropped to make room, if any.
    pub(crate) fn push(&self, window: i64, text: String) -> Option<Report> {
        let dropped = {
            let mut q = self.lock();
            let dropped = if q.items.len() >= self.capacity { q.items.pop_front() } else { None };
            let seq = q.next_seq;
            q.next_seq += 1;
            q.items.push_back(Report { seq, window, text: text.into() });
            metrics::gauge!("aggregator_outbox_reports").set(q.items.len() as f64);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// The oldest unsent report.
    pub(crate) fn front(&self) -> Option<Report> {
        self.lock().items.front().cloned()
    }

    /// Removes report `seq` after it was written (no-op if it was dropped meanwhile).
    pub(crate) fn ack(&self, seq: u64) {
        let mut q = self.lock();
        if q.items.front().is_some_and(|r| r.seq == seq) {
            q.items.pop_front();
        }
        metrics::gauge!("aggregator_outbox_reports").set(q.items.len() as f64);
    }

    /// Number of unsent reports.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Resolves once a report was pushed since the last call (or is already pending).
    pub(crate) async fn wait(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Poisoning only means a panic elsewhere; the queue itself is always consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_drops_oldest_when_full_and_acks_by_sequence() {
        let o = Outbox::new(2);
        assert!(o.push(1, "a".into()).is_none());
        let first = o.front().unwrap();
        assert!(o.push(2, "b".into()).is_none());
        let dropped = o.push(3, "c".into()).unwrap();
        assert_eq!(&*dropped.text, "a");
        o.ack(first.seq); // already dropped: must not remove "b"
        assert_eq!(&*o.front().unwrap().text, "b");
        o.ack(o.front().unwrap().seq);
        assert_eq!(&*o.front().unwrap().text, "c");
        assert_eq!(o.len(), 1);
    }

    #[tokio::test]
    async fn wait_sees_a_push_made_before_it() {
        let o = Outbox::new(4);
        o.push(0, "x".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), o.wait()).await.unwrap();
    }
}
