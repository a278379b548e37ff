//! The per-window count: messages grouped by (parent of source, parent of destination).
//!
//! # Semantics
//! A window is the half-open interval `[k·L, (k+1)·L)` of Unix time (L = `--interval`, 60 s by
//! default, so windows are wall-clock minutes). A message belongs to the window that is open
//! when the aggregator *reads* it. At the boundary the window is closed ([`Tally::flush`]):
//! its count map is swapped out (the map keeps its capacity) and becomes one report.
//!
//! # Unknown children
//! A message naming a child no association has mentioned yet is held as *pending*, keyed by
//! its (source child, destination child) pair. At the flush of its window it is resolved with
//! the associations known by then and counted in that window. Still unresolved, it is carried
//! for exactly one more window: resolved at the next flush it is counted in that (later)
//! window's report, otherwise it is dropped and counted in `aggregator_unresolved_dropped_total`.
//! Pending pairs (held + carried) are capped at `--max-pending-pairs`; a message for a new pair
//! over the cap is shed at once and counted, so memory stays bounded.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Clock;
use switchboard_core::window::Windows;

use crate::associations::{Associations, ParentIdx, Update};
use crate::protocol::Id;

/// Key of the count map: source parent index in the high half, destination in the low half.
type PairKey = u64;

/// Memory bounds of a [`Tally`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most children remembered.
    pub(crate) max_children: usize,
    /// Most distinct parents remembered.
    pub(crate) max_parents: usize,
    /// Most distinct unresolved (source, destination) child pairs held at once.
    pub(crate) max_pending: usize,
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Both children known: counted in the open window.
    Counted,
    /// A child is unknown: held until the flush.
    Pending,
    /// A child is unknown and the pending cap is reached: dropped.
    Shed,
}

/// One closed window.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Flush {
    /// `(source parent, destination parent, count)`, sorted by parents.
    pub(crate) rows: Vec<(Id, Id, u64)>,
    /// Messages that were pending and got resolved at this flush.
    pub(crate) resolved_late: u64,
    /// Messages still unresolved, carried into the next window.
    pub(crate) carried: u64,
    /// Messages unresolved for two windows, dropped.
    pub(crate) dropped: u64,
}

/// Associations plus the open window's counts.
#[derive(Debug)]
pub(crate) struct Tally {
    associations: Associations,
    counts: HashMap<PairKey, u64, ahash::RandomState>,
    pending: HashMap<(Id, Id), u64, ahash::RandomState>,
    carried: HashMap<(Id, Id), u64, ahash::RandomState>,
    max_pending: usize,
}

impl Tally {
    /// An empty tally within `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            associations: Associations::new(limits.max_children, limits.max_parents),
            counts: HashMap::default(),
            pending: HashMap::default(),
            carried: HashMap::default(),
            max_pending: limits.max_pending,
        }
    }

    /// Applies one association update.
    pub(crate) fn associate(&mut self, parent: Id, child: Id) -> Update {
        self.associations.update(parent, child)
    }

    /// Number of known children.
    pub(crate) fn children(&self) -> usize {
        self.associations.children()
    }

    /// Number of distinct unresolved child pairs held (this window and carried).
    pub(crate) fn pending_pairs(&self) -> usize {
        self.pending.len() + self.carried.len()
    }

    /// Counts one message in the open window.
    #[inline]
    pub(crate) fn record(&mut self, source: Id, destination: Id) -> Recorded {
        if let Some(key) = pair_key(&self.associations, source, destination) {
            *self.counts.entry(key).or_insert(0) += 1;
            return Recorded::Counted;
        }
        if let Some(n) = self.pending.get_mut(&(source, destination)) {
            *n += 1;
            return Recorded::Pending;
        }
        if self.pending_pairs() >= self.max_pending {
            return Recorded::Shed;
        }
        self.pending.insert((source, destination), 1);
        Recorded::Pending
    }

    /// Closes the open window: resolves what can be resolved and returns the window's report.
    pub(crate) fn flush(&mut self) -> Flush {
        let mut out = Flush::default();
        let assoc = &self.associations;
        let counts = &mut self.counts;
        // Carried from the previous window: last chance.
        for ((s, d), n) in self.carried.drain() {
            match pair_key(assoc, s, d) {
                Some(key) => {
                    *counts.entry(key).or_insert(0) += n;
                    out.resolved_late += n;
                }
                None => out.dropped += n,
            }
        }
        // Held in this window: resolve now or carry once.
        self.pending.retain(|&(s, d), n| match pair_key(assoc, s, d) {
            Some(key) => {
                *counts.entry(key).or_insert(0) += *n;
                out.resolved_late += *n;
                false
            }
            None => {
                out.carried += *n;
                true
            }
        });
        // What is left in `pending` is carried; the drained map becomes the new `pending`.
        std::mem::swap(&mut self.pending, &mut self.carried);

        out.rows = counts
            .drain()
            .map(|(key, n)| {
                let (s, d) = split_key(key);
                (assoc.parent_id(s), assoc.parent_id(d), n)
            })
            .collect();
        out.rows.sort_unstable();
        out
    }
}

#[inline]
fn pair_key(assoc: &Associations, source: Id, destination: Id) -> Option<PairKey> {
    let s = assoc.parent_of(source)?;
    let d = assoc.parent_of(destination)?;
    Some((u64::from(s) << 32) | u64::from(d))
}

fn split_key(key: PairKey) -> (ParentIdx, ParentIdx) {
    // Truncation is the point: the key is two u32 halves.
    #[allow(clippy::cast_possible_truncation)]
    ((key >> 32) as ParentIdx, key as ParentIdx)
}

/// Which window is open, by an injected [`Clock`].
pub(crate) struct Schedule {
    windows: Windows,
    clock: Arc<dyn Clock>,
    open: i64,
}

impl Schedule {
    /// Opens the window containing the clock's current time.
    pub(crate) fn new(interval: Duration, clock: Arc<dyn Clock>) -> Self {
        let windows = Windows::new(interval);
        let open = windows.start_of(clock.now_ms());
        Self { windows, clock, open }
    }

    /// Start of the open window, in Unix milliseconds.
    pub(crate) fn open_window(&self) -> i64 {
        self.open
    }

    /// Time until the open window ends (zero if it already has).
    pub(crate) fn until_due(&self) -> Duration {
        let end = self.open.saturating_add(self.windows.len_ms());
        Duration::from_millis(u64::try_from(end - self.clock.now_ms()).unwrap_or(0))
    }

    /// If the open window has ended, opens the one containing now and returns the closed
    /// window's start. Windows skipped entirely (process suspended) produce no report.
    pub(crate) fn close_due(&mut self) -> Option<i64> {
        let now = self.clock.now_ms();
        let current = self.windows.start_of(now);
        (current > self.open).then(|| std::mem::replace(&mut self.open, current))
    }
}

#[cfg(test)]
#[path = "window/tests.rs"]
mod tests;
