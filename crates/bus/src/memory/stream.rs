//! An in-memory durable stream: an append-only log with JetStream's limits and dedup.
//!
//! Sequences are contiguous (only the oldest messages are ever removed), so a sequence
//! number indexes the log directly. The stream also owns its consumers' state: acking,
//! fetching and discarding all touch both, and one lock per stream keeps them consistent.
//! Relative times (age, dedup window, ack deadlines) use tokio's clock so tests can pause it;
//! `published_ms` is wall-clock time, as on NATS.
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::consumer::ConsumerState;
use super::lock;
use crate::StreamConfig;
use crate::shed::Shed;
use crate::subject::matches;

/// A stream and the state of its durable consumers.
pub(crate) struct Stream {
    state: Mutex<StreamState>,
    /// Woken on every change a waiting fetch may care about: a new message, an ack that
    /// frees an ack-pending slot, a nak that changes a redelivery time.
    pub(super) changed: Notify,
}

pub(super) struct StreamState {
    pub(super) cfg: StreamConfig,
    pub(super) msgs: VecDeque<Stored>,
    /// Sequence of the last message ever stored (0: none yet).
    pub(super) last_seq: u64,
    bytes: u64,
    /// msg_id → sequence, for ids seen inside the duplicate window.
    dedup: HashMap<String, u64>,
    /// The same ids in arrival order, to expire them.
    dedup_order: VecDeque<(Instant, String)>,
    pub(super) consumers: HashMap<String, ConsumerState>,
    discarded: Shed,
}

/// One stored message.
pub(super) struct Stored {
    pub(super) seq: u64,
    pub(super) subject: String,
    pub(super) payload: Bytes,
    pub(super) published_ms: i64,
    stored_at: Instant,
}

impl Stored {
    /// Bytes accounted against `max_bytes`: subject plus payload.
    fn size(&self) -> u64 {
        (self.subject.len() + self.payload.len()) as u64
    }
}

fn now_unix_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Stream {
    /// An empty stream; `cfg` must be valid ([`StreamConfig::validate`]).
    pub(crate) fn new(cfg: StreamConfig) -> Self {
        let discarded =
            Shed::new("bus_stream_discarded_total", "memory", "stream_limit", cfg.name.clone());
        let state = StreamState {
            cfg,
            msgs: VecDeque::new(),
            last_seq: 0,
            bytes: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            consumers: HashMap::new(),
            discarded,
        };
        Self { state: Mutex::new(state), changed: Notify::new() }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    /// The subject patterns this stream captures.
    pub(crate) fn subjects(&self) -> Vec<String> {
        self.lock().cfg.subjects.clone()
    }

    /// Whether a message on `subject` belongs to this stream.
    pub(crate) fn captures(&self, subject: &str) -> bool {
        self.lock().cfg.subjects.iter().any(|p| matches(p, subject))
    }

    /// Applies new limits (and subjects); excess messages are discarded at once.
    pub(crate) fn reconfigure(&self, cfg: &StreamConfig) {
        let mut st = self.lock();
        st.cfg = cfg.clone();
        st.enforce_limits(Instant::now());
    }

    /// Stores a message and returns its sequence; a `msg_id` already stored inside the
    /// duplicate window returns the original sequence and stores nothing.
    pub(crate) fn append(&self, subject: &str, payload: Bytes, msg_id: Option<&str>) -> u64 {
        let now = Instant::now();
        let seq = {
            let mut st = self.lock();
            st.expire_dedup(now);
            if let Some(&seq) = msg_id.and_then(|id| st.dedup.get(id)) {
                metrics::counter!("bus_duplicates_total", "engine" => "memory").increment(1);
                return seq;
            }
            st.last_seq += 1;
            let seq = st.last_seq;
            let stored = Stored {
                seq,
                subject: subject.to_owned(),
                payload,
                published_ms: now_unix_ms(),
                stored_at: now,
            };
            st.bytes += stored.size();
            st.msgs.push_back(stored);
            if let Some(id) = msg_id {
                st.dedup.insert(id.to_owned(), seq);
                st.dedup_order.push_back((now, id.to_owned()));
            }
            st.enforce_limits(now);
            seq
        };
        self.changed.notify_waiters();
        seq
    }
}

impl StreamState {
    /// Sequence of the oldest message still stored (`last_seq + 1` when empty).
    pub(super) fn first_seq(&self) -> u64 {
        self.msgs.front().map_or(self.last_seq + 1, |m| m.seq)
    }

    /// The message with sequence `seq`, if still stored.
    pub(super) fn get(&self, seq: u64) -> Option<&Stored> {
        let index = seq.checked_sub(self.first_seq())?;
        self.msgs.get(usize::try_from(index).ok()?)
    }

    /// Sequence of the first stored message published at or after `ms` (Unix ms).
    pub(super) fn seq_at_time(&self, ms: i64) -> u64 {
        let index = self.msgs.partition_point(|m| m.published_ms < ms);
        self.msgs.get(index).map_or(self.last_seq + 1, |m| m.seq)
    }

    /// Drops the oldest messages beyond `max_messages`, `max_bytes` or `max_age`.
    pub(super) fn enforce_limits(&mut self, now: Instant) {
        let mut dropped = 0;
        while let Some(oldest) = self.msgs.front() {
            let too_many = self.cfg.max_messages.is_some_and(|max| self.msgs.len() as u64 > max);
            let too_big = self.cfg.max_bytes.is_some_and(|max| self.bytes > max);
            let too_old =
                self.cfg.max_age.is_some_and(|age| now.duration_since(oldest.stored_at) >= age);
            if !(too_many || too_big || too_old) {
                break;
            }
            self.bytes -= oldest.size();
            self.msgs.pop_front();
            dropped += 1;
        }
        self.discarded.record(dropped);
    }

    fn expire_dedup(&mut self, now: Instant) {
        // As on JetStream, the window never outlasts max_age.
        let window = self
            .cfg
            .max_age
            .map_or(self.cfg.duplicate_window, |age| age.min(self.cfg.duplicate_window));
        while let Some((at, _)) = self.dedup_order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if let Some((_, id)) = self.dedup_order.pop_front() {
                self.dedup.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stream(f: impl FnOnce(&mut StreamConfig)) -> Stream {
        let mut cfg = StreamConfig::new("S", ["s.>"]);
        f(&mut cfg);
        cfg.validate().expect("valid config");
        Stream::new(cfg)
    }

    fn seqs(s: &Stream) -> Vec<u64> {
        s.lock().msgs.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn max_messages_discards_oldest_and_counts() {
        let s = stream(|c| c.max_messages = Some(3));
        for i in 0..5 {
            s.append("s.x", Bytes::from(vec![i]), None);
        }
        assert_eq!(seqs(&s), [3, 4, 5]);
        assert_eq!(s.lock().discarded.total(), 2);
        assert_eq!(s.lock().get(4).map(|m| m.payload.clone()), Some(Bytes::from(vec![3])));
        assert!(s.lock().get(2).is_none());
    }

    #[test]
    fn max_bytes_counts_subject_and_payload() {
        // Each message is 3 (subject) + 7 (payload) = 10 bytes.
        let s = stream(|c| c.max_bytes = Some(25));
        for _ in 0..4 {
            s.append("s.x", Bytes::from_static(b"payload"), None);
        }
        assert_eq!(seqs(&s), [3, 4]);
        assert_eq!(s.lock().bytes, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_expires_old_messages() {
        let s = stream(|c| c.max_age = Some(Duration::from_secs(10)));
        s.append("s.x", Bytes::new(), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        s.append("s.x", Bytes::new(), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        s.append("s.x", Bytes::new(), None);
        assert_eq!(seqs(&s), [2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_holds_only_inside_the_window() {
        let s = stream(|c| c.duplicate_window = Duration::from_secs(60));
        assert_eq!(s.append("s.x", Bytes::new(), Some("a")), 1);
        assert_eq!(s.append("s.x", Bytes::new(), Some("a")), 1);
        assert_eq!(s.append("s.x", Bytes::new(), Some("b")), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.append("s.x", Bytes::new(), Some("a")), 3);
        assert_eq!(seqs(&s), [1, 2, 3]);
    }
}
