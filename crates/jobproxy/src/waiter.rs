//! Held requests waiting for their callback, keyed by [`Token`].
//!
//! A held request registers *before* its job is started upstream, so the callback always finds
//! its waiter, even when it arrives before the start response (then it is parked until the
//! start response names the job id, and checked against it). Every way a held request can end
//! — delivered, client gone, deadline, upstream error — goes through [`Hold`]'s `Drop`, so the
//! held count (and the `jobproxy_held_requests` gauge) cannot leak. Recently finished tokens
//! are remembered (bounded) so late callbacks get a precise answer: duplicate or gone.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::token::Token;

/// How many finished tokens we remember for late callbacks (about 40 bytes each).
const RECENT_CAPACITY: usize = 65_536;

/// What became of one callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Handed to the held request.
    Delivered,
    /// Arrived before the start response; kept until the job id is known.
    Parked,
    /// No held request ever had this token (forged or from another node).
    Unknown,
    /// The held request already got its report.
    Duplicate,
    /// The report names another job than the one started for this token.
    Mismatch,
    /// The held request ended (client gone, deadline, upstream error) before the report came.
    Gone,
}

impl Delivery {
    /// Label of `jobproxy_callbacks_total{outcome}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Parked => "parked",
            Self::Unknown => "unknown",
            Self::Duplicate => "duplicate",
            Self::Mismatch => "mismatch",
            Self::Gone => "gone",
        }
    }

    /// Counts this outcome.
    pub fn count(self) {
        metrics::counter!("jobproxy_callbacks_total", "outcome" => self.label()).increment(1);
    }
}

/// Registry of held requests. Shared as `Arc<Waiters>`.
pub(crate) struct Waiters {
    // A std Mutex: held for a map operation only, never across an await.
    inner: Mutex<Inner>,
    held: watch::Sender<usize>,
    /// This node's id, put in every token it mints.
    node: u16,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<Token, Pending>,
    recent: HashMap<Token, Ending>,
    recent_order: VecDeque<Token>,
}

/// What a held request receives: the report, or why the proxy could not take it.
pub(crate) type Report = Result<Bytes, String>;

struct Pending {
    tx: oneshot::Sender<Report>,
    job: Job,
}

enum Job {
    /// The start request is in flight; a callback that beats it waits here.
    Starting { early: Option<(String, Bytes)> },
    /// Upstream named the job.
    Running { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Delivered,
    Abandoned,
}

impl Default for Waiters {
    fn default() -> Self {
        Self::on_node(0)
    }
}

impl Waiters {
    /// The registry of node `node`: its tokens carry that id.
    pub fn on_node(node: u16) -> Self {
        Self { inner: Mutex::default(), held: watch::Sender::new(0), node }
    }

    /// This node's id.
    pub fn node(&self) -> u16 {
        self.node
    }

    /// Registers a new held request; the receiver yields the callback body.
    pub fn hold(self: &Arc<Self>) -> (Hold, oneshot::Receiver<Report>) {
        let (tx, rx) = oneshot::channel();
        let token = Token::mint_on(self.node);
        let mut inner = self.lock();
        inner.pending.insert(token, Pending { tx, job: Job::Starting { early: None } });
        self.set_held(inner.pending.len());
        (Hold { token, waiters: Arc::clone(self) }, rx)
    }

    /// Upstream accepted the job `id` for `token`. Delivers a parked callback if it matches;
    /// returns the outcome of that parked callback, if there was one.
    pub fn started(&self, token: Token, id: &str) -> Option<Delivery> {
        let mut inner = self.lock();
        let pending = inner.pending.get_mut(&token)?;
        let Job::Starting { early } = &mut pending.job else { return None };
        let parked = early.take();
        pending.job = Job::Running { id: id.to_owned() };
        let (early_id, body) = parked?;
        if early_id != id {
            return Some(Delivery::Mismatch);
        }
        Some(self.deliver(&mut inner, token, Ok(body)))
    }

    /// A callback for `token` reporting job `id` arrived with `body`.
    pub fn callback(&self, token: Token, id: &str, body: Bytes) -> Delivery {
        let mut inner = self.lock();
        let Some(pending) = inner.pending.get_mut(&token) else {
            return match inner.recent.get(&token) {
                Some(Ending::Delivered) => Delivery::Duplicate,
                Some(Ending::Abandoned) => Delivery::Gone,
                None => Delivery::Unknown,
            };
        };
        match &mut pending.job {
            Job::Starting { early: Some(_) } => Delivery::Duplicate,
            Job::Starting { early } => {
                *early = Some((id.to_owned(), body));
                Delivery::Parked
            }
            Job::Running { id: job } if job != id => Delivery::Mismatch,
            Job::Running { .. } => self.deliver(&mut inner, token, Ok(body)),
        }
    }

    /// A callback for `token` was refused before it could be read (its body is larger than
    /// `--max-body`): the held request ends now with `reason` instead of waiting until its
    /// deadline for a report that cannot arrive. False when no request holds `token`.
    pub fn refuse(&self, token: Token, reason: String) -> bool {
        let mut inner = self.lock();
        inner.pending.contains_key(&token)
            && self.deliver(&mut inner, token, Err(reason)) == Delivery::Delivered
    }

    /// Number of held requests right now.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// Resolves once no request is held (used to drain on shutdown).
    pub async fn idle(&self) {
        let mut rx = self.held.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn deliver(&self, inner: &mut Inner, token: Token, body: Report) -> Delivery {
        let Some(pending) = inner.pending.remove(&token) else { return Delivery::Unknown };
        self.set_held(inner.pending.len());
        // The receiver is gone only if the request is being dropped right now.
        let ending = match pending.tx.send(body) {
            Ok(()) => Ending::Delivered,
            Err(_) => Ending::Abandoned,
        };
        remember(inner, token, ending);
        if ending == Ending::Delivered { Delivery::Delivered } else { Delivery::Gone }
    }

    fn release(&self, token: Token) {
        let mut inner = self.lock();
        if inner.pending.remove(&token).is_some() {
            remember(&mut inner, token, Ending::Abandoned);
            self.set_held(inner.pending.len());
        }
    }

    fn set_held(&self, n: usize) {
        self.held.send_replace(n);
        #[allow(clippy::cast_precision_loss)] // a count far below 2^52
        metrics::gauge!("jobproxy_held_requests").set(n as f64);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; every map operation is atomic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn remember(inner: &mut Inner, token: Token, ending: Ending) {
    if inner.recent.insert(token, ending).is_none() {
        inner.recent_order.push_back(token);
    }
    while inner.recent_order.len() > RECENT_CAPACITY {
        if let Some(old) = inner.recent_order.pop_front() {
            inner.recent.remove(&old);
        }
    }
}

/// One held request. Dropping it (for whatever reason) unregisters the token.
pub(crate) struct Hold {
    token: Token,
    waiters: Arc<Waiters>,
}

impl Hold {
    /// The token that names this request in its callback URL.
    pub fn token(&self) -> Token {
        self.token
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.waiters.release(self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    #[tokio::test]
    async fn callback_after_start_is_delivered_once() {
        let w = Arc::new(Waiters::default());
        let (hold, rx) = w.hold();
        assert_eq!(w.held(), 1);
        assert_eq!(w.started(hold.token(), "ab"), None);
        assert_eq!(w.callback(hold.token(), "ab", body("report")), Delivery::Delivered);
        assert_eq!(rx.await.unwrap().unwrap(), "report");
        assert_eq!(w.held(), 0);
        assert_eq!(w.callback(hold.token(), "ab", body("again")), Delivery::Duplicate);
        drop(hold);
        assert_eq!(w.held(), 0);
    }

    #[tokio::test]
    async fn callback_before_start_is_parked_then_checked() {
        let w = Arc::new(Waiters::default());
        let (hold, rx) = w.hold();
        assert_eq!(w.callback(hold.token(), "ab", body("early")), Delivery::Parked);
        assert_eq!(w.callback(hold.token(), "ab", body("twice")), Delivery::Duplicate);
        assert_eq!(w.started(hold.token(), "ab"), Some(Delivery::Delivered));
        assert_eq!(rx.await.unwrap().unwrap(), "early");
    }

    #[tokio::test]
    async fn early_callback_for_another_job_is_dropped_and_the_real_one_wins() {
        let w = Arc::new(Waiters::default());
        let (hold, mut rx) = w.hold();
        assert_eq!(w.callback(hold.token(), "ff", body("forged")), Delivery::Parked);
        assert_eq!(w.started(hold.token(), "ab"), Some(Delivery::Mismatch));
        assert!(rx.try_recv().is_err());
        assert_eq!(w.callback(hold.token(), "cd", body("forged")), Delivery::Mismatch);
        assert_eq!(w.callback(hold.token(), "ab", body("real")), Delivery::Delivered);
        assert_eq!(rx.await.unwrap().unwrap(), "real");
    }

    #[tokio::test]
    async fn a_refused_callback_ends_its_held_request_with_the_reason() {
        let w = Arc::new(Waiters::default());
        assert!(!w.refuse(Token::mint(), "too large".into()), "no request holds it");
        let (hold, rx) = w.hold();
        w.started(hold.token(), "ab");
        assert!(w.refuse(hold.token(), "too large".into()));
        assert_eq!(rx.await.unwrap().unwrap_err(), "too large");
        assert_eq!(w.held(), 0);
        assert_eq!(w.callback(hold.token(), "ab", body("late")), Delivery::Duplicate);
    }

    #[test]
    fn unknown_and_gone_tokens_are_told_apart() {
        let w = Arc::new(Waiters::default());
        assert_eq!(w.callback(Token::mint(), "ab", body("x")), Delivery::Unknown);
        let (hold, rx) = w.hold();
        let token = hold.token();
        w.started(token, "ab");
        drop((hold, rx));
        assert_eq!(w.held(), 0);
        assert_eq!(w.callback(token, "ab", body("late")), Delivery::Gone);
    }

    #[tokio::test]
    async fn idle_resolves_when_the_last_hold_ends() {
        let w = Arc::new(Waiters::default());
        let (hold, _rx) = w.hold();
        let waiter = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(hold);
        waiter.await.unwrap();
    }
}
