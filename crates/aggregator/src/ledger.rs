//! The wsserver simulator's ground truth: what it sent, per window, and the check of every
//! report it receives against it.
//!
//! The ledger applies the documented window semantics independently of the client code, with
//! plain maps of UUIDs: a message counts in the window of its send time, under the parents
//! announced before it; messages naming unannounced children are resolved at the window's
//! end, or carried for one more window, then dropped. The simulator sends nothing within a
//! guard band around each boundary, so "sent in window W" and "read in window W" agree.
//!
//! Reports carry no window id, so they are matched in order to closed windows. A report that
//! arrives while no window is closed is compared with the open window so far (the client's
//! shutdown flush); an empty one there is "unattributed" (a window from before this server).
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;
use switchboard_core::window::Windows;
use uuid::Uuid;

/// Counts per (source parent, destination parent).
pub(crate) type Counts = BTreeMap<(Uuid, Uuid), u64>;

/// One row of a report, as received.
#[derive(Debug, Deserialize)]
pub(crate) struct Row {
    source: Uuid,
    destination: Uuid,
    count: u64,
}

/// The counts a report text carries (rows for the same pair added up).
pub(crate) fn counts_of(text: &str) -> Result<Counts, String> {
    let rows: Vec<Row> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut counts = Counts::new();
    for r in rows {
        *counts.entry((r.source, r.destination)).or_insert(0) += r.count;
    }
    Ok(counts)
}

/// What a received report was found to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Equal to the ground truth of the window that starts at this time.
    Match(i64),
    /// Differs from the ground truth of that window.
    Mismatch { window: i64, expected: Counts, got: Counts },
    /// Cannot be attributed to a window this server saw completely.
    Unattributed,
    /// Not a valid report.
    Invalid(String),
}

/// Ground truth of the simulator.
pub(crate) struct Ledger {
    windows: Windows,
    parent_of: HashMap<Uuid, Uuid>,
    open: Option<i64>,
    counts: Counts,
    pending: Vec<(Uuid, Uuid)>,
    carried: Vec<(Uuid, Uuid)>,
    closed: VecDeque<(i64, Counts)>,
    skip_first: bool,
}

impl Ledger {
    /// A ledger for windows of `windows`; `skip_first` leaves the first window unchecked (the
    /// client may have counted messages from an earlier server in it).
    pub(crate) fn new(windows: Windows, skip_first: bool) -> Self {
        Self {
            windows,
            parent_of: HashMap::new(),
            open: None,
            counts: Counts::new(),
            pending: Vec::new(),
            carried: Vec::new(),
            closed: VecDeque::new(),
            skip_first,
        }
    }

    /// Starts keeping windows (at the first connection); earlier calls are no-ops.
    pub(crate) fn start(&mut self, now_ms: i64) {
        if self.open.is_none() {
            self.open = Some(self.windows.start_of(now_ms));
        }
    }

    /// Records an association sent at `now_ms`.
    pub(crate) fn announce(&mut self, parent: Uuid, child: Uuid, now_ms: i64) {
        self.advance(now_ms);
        self.parent_of.insert(child, parent);
    }

    /// Records a message sent at `now_ms`.
    pub(crate) fn message(&mut self, source: Uuid, destination: Uuid, now_ms: i64) {
        self.advance(now_ms);
        match self.resolve(source, destination) {
            Some(key) => *self.counts.entry(key).or_insert(0) += 1,
            None => self.pending.push((source, destination)),
        }
    }

    /// Checks one report text received at `now_ms`.
    pub(crate) fn check(&mut self, text: &str, now_ms: i64) -> Verdict {
        let got = match counts_of(text) {
            Ok(got) => got,
            Err(e) => return Verdict::Invalid(e),
        };
        self.advance(now_ms);
        let Some((window, expected)) = self.closed.pop_front() else {
            // Nothing closed: the client's shutdown flush of the open window, or a report
            // queued before this server existed.
            let (window, expected) = self.provisional();
            return if !got.is_empty() && got == expected {
                Verdict::Match(window)
            } else {
                Verdict::Unattributed
            };
        };
        if got == expected {
            Verdict::Match(window)
        } else if std::mem::take(&mut self.skip_first) {
            Verdict::Unattributed
        } else {
            Verdict::Mismatch { window, expected, got }
        }
    }

    /// Closes every window that ended by `now_ms`.
    fn advance(&mut self, now_ms: i64) {
        let Some(mut open) = self.open else { return };
        while open + self.windows.len_ms() <= now_ms {
            let counts = self.close();
            self.closed.push_back((open, counts));
            open += self.windows.len_ms();
        }
        self.open = Some(open);
    }

    fn close(&mut self) -> Counts {
        let mut counts = std::mem::take(&mut self.counts);
        for (s, d) in std::mem::take(&mut self.carried) {
            if let Some(key) = self.resolve(s, d) {
                *counts.entry(key).or_insert(0) += 1;
            } // else: unresolved for two windows, dropped
        }
        for (s, d) in std::mem::take(&mut self.pending) {
            match self.resolve(s, d) {
                Some(key) => *counts.entry(key).or_insert(0) += 1,
                None => self.carried.push((s, d)),
            }
        }
        counts
    }

    /// What the open window would report if it closed now.
    fn provisional(&self) -> (i64, Counts) {
        let mut counts = self.counts.clone();
        for &(s, d) in self.carried.iter().chain(&self.pending) {
            if let Some(key) = self.resolve(s, d) {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
        (self.open.unwrap_or_default(), counts)
    }

    fn resolve(&self, source: Uuid, destination: Uuid) -> Option<(Uuid, Uuid)> {
        Some((*self.parent_of.get(&source)?, *self.parent_of.get(&destination)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(rows: &[(Uuid, Uuid, u64)]) -> String {
        let rows: Vec<_> = rows
            .iter()
            .map(|(s, d, n)| serde_json::json!({"source": s, "destination": d, "count": n}))
            .collect();
        serde_json::Value::Array(rows).to_string()
    }

    #[test]
    fn windows_are_checked_in_order_with_late_resolution() {
        let (p, q, a, b, late) =
            (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut l = Ledger::new(Windows::new(Duration::from_secs(1)), false);
        l.start(10_100);
        l.announce(p, a, 10_100);
        l.announce(q, b, 10_100);
        l.message(a, b, 10_200);
        l.message(a, late, 10_300);
        l.announce(q, late, 11_500); // next window: the pending message resolves one window late
        l.message(b, a, 11_600);
        assert_eq!(l.check(&report(&[(p, q, 1)]), 11_010), Verdict::Match(10_000));
        assert_eq!(l.check(&report(&[(p, q, 1), (q, p, 1)]), 12_010), Verdict::Match(11_000));
        let v = l.check("[]", 13_010);
        assert_eq!(v, Verdict::Match(12_000));
        assert!(matches!(
            l.check(&report(&[(p, p, 1)]), 14_010),
            Verdict::Mismatch { window: 13_000, .. }
        ));
        assert!(matches!(l.check("{", 14_020), Verdict::Invalid(_)));
    }

    #[test]
    fn a_report_before_any_close_is_the_shutdown_flush_or_unattributed() {
        let (p, a) = (Uuid::new_v4(), Uuid::new_v4());
        let mut l = Ledger::new(Windows::new(Duration::from_secs(60)), false);
        l.start(1_000);
        assert_eq!(l.check("[]", 1_500), Verdict::Unattributed);
        l.announce(p, a, 2_000);
        l.message(a, a, 2_000);
        assert_eq!(l.check(&report(&[(p, p, 1)]), 3_000), Verdict::Match(0));
    }
}
