//! In-memory durable pull consumers: explicit ack, redelivery, backpressure.
//!
//! A durable consumer is state kept by its stream under its durable name; every
//! [`MemoryConsumer`] handle bound to that name shares it, so handles split the messages.
//! A delivered message stays *in flight* until acked; if its ack deadline passes (the worker
//! crashed or is stuck) or it is nak'ed, the next fetch delivers it again. New messages are
//! only handed out while fewer than `max_ack_pending` are in flight.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stream::{Stream, StreamState};
use crate::stream::Acker;
use crate::subject::{matches, overlaps};
use crate::{ConsumerConfig, DeliverFrom, Delivery, Error, Result};

/// The shared state of one durable consumer.
pub(crate) struct ConsumerState {
    cfg: ConsumerConfig,
    /// Next stream sequence never delivered to this consumer.
    next_seq: u64,
    in_flight: InFlight,
}

/// Delivered, unacked messages, indexed both by sequence and by redelivery deadline.
#[derive(Default)]
struct InFlight {
    /// seq → (times delivered, redelivery deadline).
    by_seq: BTreeMap<u64, (u64, Instant)>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.by_seq.len()
    }

    fn schedule(&mut self, seq: u64, delivered: u64, deadline: Instant) {
        if let Some((_, old)) = self.by_seq.insert(seq, (delivered, deadline)) {
            self.by_deadline.remove(&(old, seq));
        }
        self.by_deadline.insert((deadline, seq));
    }

    fn remove(&mut self, seq: u64) {
        if let Some((_, deadline)) = self.by_seq.remove(&seq) {
            self.by_deadline.remove(&(deadline, seq));
        }
    }

    /// The earliest message whose deadline has passed, with its delivery count so far.
    fn due(&self, now: Instant) -> Option<(u64, u64)> {
        let &(deadline, seq) = self.by_deadline.first()?;
        (deadline <= now).then(|| (seq, self.by_seq[&seq].0))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(deadline, _)| deadline)
    }

    /// Forgets messages the stream has discarded: they can never be delivered again.
    fn forget_below(&mut self, first_seq: u64) {
        let kept = self.by_seq.split_off(&first_seq);
        for (seq, (_, deadline)) in std::mem::replace(&mut self.by_seq, kept) {
            self.by_deadline.remove(&(deadline, seq));
        }
    }
}

/// A handle on a durable consumer of an in-memory stream.
pub(crate) struct MemoryConsumer {
    stream: Arc<Stream>,
    durable: Arc<str>,
}

/// Acks or naks one delivered message.
pub(crate) struct MemoryAcker {
    stream: Arc<Stream>,
    durable: Arc<str>,
    seq: u64,
}

/// Checks what depends on the stream; [`ConsumerConfig::validate`] has run before.
fn validate(cfg: &ConsumerConfig, st: &StreamState) -> Result<()> {
    match &cfg.filter_subject {
        Some(filter) if !st.cfg.subjects.iter().any(|s| overlaps(s, filter)) => {
            Err(Error::config(format!(
                "consumer {}: filter {filter:?} matches no subject of stream {}",
                cfg.durable, st.cfg.name
            )))
        }
        _ => Ok(()),
    }
}

impl MemoryConsumer {
    /// Binds to the durable consumer `cfg.durable`, creating it if needed. An existing one
    /// keeps its position; its `ack_wait` and `max_ack_pending` are updated.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or a different filter subject.
    pub(crate) fn bind(stream: Arc<Stream>, cfg: &ConsumerConfig) -> Result<Self> {
        {
            let mut guard = stream.lock();
            let st = &mut *guard;
            validate(cfg, st)?;
            match st.consumers.get_mut(&cfg.durable) {
                Some(existing) if existing.cfg.filter_subject != cfg.filter_subject => {
                    return Err(Error::config(format!(
                        "consumer {} exists with filter {:?}",
                        cfg.durable, existing.cfg.filter_subject
                    )));
                }
                Some(existing) => {
                    existing.cfg.ack_wait = cfg.ack_wait;
                    existing.cfg.max_ack_pending = cfg.max_ack_pending;
                }
                None => {
                    let next_seq = match cfg.deliver_from {
                        DeliverFrom::All => st.first_seq(),
                        DeliverFrom::New => st.last_seq + 1,
                        DeliverFrom::Time(ms) => st.seq_at_time(ms),
                    };
                    let state = ConsumerState {
                        cfg: cfg.clone(),
                        next_seq,
                        in_flight: InFlight::default(),
                    };
                    st.consumers.insert(cfg.durable.clone(), state);
                }
            }
        }
        // A larger max_ack_pending may unblock waiting fetches.
        stream.changed.notify_waiters();
        Ok(Self { stream, durable: cfg.durable.as_str().into() })
    }

    /// Up to `max` messages, waiting at most `wait` for the first. Wakes on new messages,
    /// acks and naks, and when the earliest in-flight message comes due for redelivery.
    pub(crate) async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a change between the look and the wait is seen.
            let changed = self.stream.changed.notified();
            let now = Instant::now();
            let wake_at = {
                let mut st = self.stream.lock();
                let batch = self.take(&mut st, max, now)?;
                if !batch.is_empty() || now >= deadline || max == 0 {
                    return Ok(batch);
                }
                let consumer = st.consumers.get(&*self.durable);
                consumer
                    .and_then(|c| c.in_flight.next_deadline())
                    .map_or(deadline, |t| t.min(deadline))
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Hands out due redeliveries first, then new messages while under `max_ack_pending`.
    fn take(&self, st: &mut StreamState, max: usize, now: Instant) -> Result<Vec<Delivery>> {
        st.enforce_limits(now);
        let first_seq = st.first_seq();
        let last_seq = st.last_seq;
        let c = st
            .consumers
            .get_mut(&*self.durable)
            .ok_or_else(|| Error::NotFound(format!("consumer {}", self.durable)))?;
        c.in_flight.forget_below(first_seq);
        c.next_seq = c.next_seq.max(first_seq);
        let mut picked = Vec::new();
        while picked.len() < max {
            let Some((seq, delivered)) = c.in_flight.due(now) else { break };
            c.in_flight.schedule(seq, delivered + 1, now + c.cfg.ack_wait);
            picked.push((seq, delivered + 1));
        }
        if !picked.is_empty() {
            metrics::counter!("bus_redelivered_total", "engine" => "memory")
                .increment(picked.len() as u64);
        }
        while picked.len() < max
            && c.in_flight.len() < c.cfg.max_ack_pending
            && c.next_seq <= last_seq
        {
            let seq = c.next_seq;
            c.next_seq += 1;
            let Some(m) = st.msgs.get((seq - first_seq) as usize) else { continue };
            if c.cfg.filter_subject.as_deref().is_none_or(|f| matches(f, &m.subject)) {
                c.in_flight.schedule(seq, 1, now + c.cfg.ack_wait);
                picked.push((seq, 1));
            }
        }
        Ok(picked
            .into_iter()
            .filter_map(|(seq, delivered)| {
                let m = st.get(seq)?;
                Some(Delivery {
                    subject: m.subject.clone(),
                    payload: m.payload.clone(),
                    stream_seq: seq,
                    delivered,
                    published_ms: m.published_ms,
                    acker: Acker::Memory(MemoryAcker {
                        stream: Arc::clone(&self.stream),
                        durable: Arc::clone(&self.durable),
                        seq,
                    }),
                })
            })
            .collect())
    }
}

impl MemoryAcker {
    /// Acknowledges; acking twice, or after the stream discarded the message, is a no-op.
    pub(crate) fn ack(&self) -> Result<()> {
        self.update(|in_flight, _| in_flight.remove(self.seq));
        Ok(())
    }

    /// Makes the message due for redelivery after `delay`.
    pub(crate) fn nak(&self, delay: Duration) -> Result<()> {
        let at = Instant::now() + delay;
        self.update(|in_flight, delivered| in_flight.schedule(self.seq, delivered, at));
        Ok(())
    }

    /// Applies `f` if the message is still in flight, then wakes waiting fetches.
    fn update(&self, f: impl FnOnce(&mut InFlight, u64)) {
        {
            let mut st = self.stream.lock();
            let Some(c) = st.consumers.get_mut(&*self.durable) else { return };
            let Some(&(delivered, _)) = c.in_flight.by_seq.get(&self.seq) else { return };
            f(&mut c.in_flight, delivered);
        }
        self.stream.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::StreamConfig;

    fn setup(cfg: ConsumerConfig) -> (Arc<Stream>, MemoryConsumer) {
        let stream = Arc::new(Stream::new(StreamConfig::new("S", ["s.>"])));
        let consumer = MemoryConsumer::bind(Arc::clone(&stream), &cfg).expect("bind");
        (stream, consumer)
    }

    fn seqs(ds: &[Delivery]) -> Vec<(u64, u64)> {
        ds.iter().map(|d| (d.stream_seq, d.delivered)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_fetch_wakes_on_append_without_time_passing() {
        let (stream, mut c) = setup(ConsumerConfig::new("w"));
        let started = Instant::now();
        let waiting = tokio::spawn(async move { c.fetch(5, Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        stream.append("s.a", Bytes::from_static(b"x"), None);
        let got = waiting.await.expect("join").expect("fetch");
        assert_eq!(seqs(&got), [(1, 1)]);
        // Paused time only moves when every task sleeps: a poll loop would have advanced it.
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_fetch_waits_exactly_its_wait() {
        let (_stream, mut c) = setup(ConsumerConfig::new("w"));
        let started = Instant::now();
        assert!(c.fetch(5, Duration::from_secs(3)).await.expect("fetch").is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn redelivery_happens_at_the_ack_deadline() {
        let cfg = ConsumerConfig { ack_wait: Duration::from_secs(30), ..ConsumerConfig::new("w") };
        let (stream, mut c) = setup(cfg);
        stream.append("s.a", Bytes::new(), None);
        stream.append("s.a", Bytes::new(), None);
        let first = c.fetch(5, Duration::ZERO).await.expect("fetch");
        assert_eq!(seqs(&first), [(1, 1), (2, 1)]);
        first[1].ack().await.expect("ack");
        let started = Instant::now();
        let again = c.fetch(5, Duration::from_secs(120)).await.expect("fetch");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(seqs(&again), [(1, 2)]);
        // Acking the stale first delivery settles the message too.
        first[0].ack().await.expect("ack");
        assert!(c.fetch(5, Duration::from_secs(60)).await.expect("fetch").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ack_frees_a_slot_for_a_waiting_fetch() {
        let cfg = ConsumerConfig { max_ack_pending: 1, ..ConsumerConfig::new("w") };
        let (stream, mut c) = setup(cfg);
        stream.append("s.a", Bytes::new(), None);
        stream.append("s.a", Bytes::new(), None);
        let first = c.fetch(5, Duration::ZERO).await.expect("fetch");
        assert_eq!(seqs(&first), [(1, 1)]);
        let waiting = tokio::spawn(async move { c.fetch(5, Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        first[0].ack().await.expect("ack");
        let next = waiting.await.expect("join").expect("fetch");
        assert_eq!(seqs(&next), [(2, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn filter_subject_skips_other_messages() {
        let cfg = ConsumerConfig {
            filter_subject: Some("s.keep.*".to_owned()),
            ..ConsumerConfig::new("w")
        };
        let (stream, mut c) = setup(cfg);
        for subject in ["s.drop", "s.keep.a", "s.drop", "s.keep.b"] {
            stream.append(subject, Bytes::new(), None);
        }
        let got = c.fetch(5, Duration::ZERO).await.expect("fetch");
        assert_eq!(seqs(&got), [(2, 1), (4, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn discarded_in_flight_messages_are_forgotten() {
        let stream = Arc::new(Stream::new(StreamConfig {
            max_messages: Some(2),
            ..StreamConfig::new("S", ["s.>"])
        }));
        let cfg = ConsumerConfig { ack_wait: Duration::from_secs(1), ..ConsumerConfig::new("w") };
        let mut c = MemoryConsumer::bind(Arc::clone(&stream), &cfg).expect("bind");
        stream.append("s.a", Bytes::new(), None);
        assert_eq!(seqs(&c.fetch(5, Duration::ZERO).await.expect("fetch")), [(1, 1)]);
        stream.append("s.a", Bytes::new(), None);
        stream.append("s.a", Bytes::new(), None); // discards seq 1, still unacked
        tokio::time::advance(Duration::from_secs(2)).await;
        let got = c.fetch(5, Duration::ZERO).await.expect("fetch");
        assert_eq!(seqs(&got), [(2, 1), (3, 1)]);
    }

    #[test]
    fn filter_must_fit_the_stream_and_stay_the_same() {
        let stream = Arc::new(Stream::new(StreamConfig::new("S", ["s.>"])));
        let bad =
            [ConsumerConfig { filter_subject: Some("t.>".into()), ..ConsumerConfig::new("w") }];
        for cfg in bad {
            let err = MemoryConsumer::bind(Arc::clone(&stream), &cfg).err();
            assert!(matches!(err, Some(Error::Config(_))), "{cfg:?}: {err:?}");
        }
        MemoryConsumer::bind(Arc::clone(&stream), &ConsumerConfig::new("w")).expect("bind");
        let other_filter =
            ConsumerConfig { filter_subject: Some("s.x".into()), ..ConsumerConfig::new("w") };
        assert!(MemoryConsumer::bind(stream, &other_filter).is_err());
    }
}
