//! Window logic: unit cases and a property test against a naive model, driven by a
//! [`ManualClock`] (no real waiting).
use std::collections::BTreeMap;

use proptest::prelude::*;
use switchboard_core::ManualClock;

use super::*;

const LIMITS: Limits = Limits { max_children: 1_000, max_parents: 1_000, max_pending: 1_000 };

fn rows(f: &Flush) -> BTreeMap<(Id, Id), u64> {
    f.rows.iter().map(|&(s, d, n)| ((s, d), n)).collect()
}

#[test]
fn counts_group_by_parents_and_reset_each_window() {
    let mut t = Tally::new(LIMITS);
    t.associate(1, 10);
    t.associate(1, 11);
    t.associate(2, 20);
    for (s, d) in [(10, 20), (11, 20), (20, 10), (10, 11)] {
        assert_eq!(t.record(s, d), Recorded::Counted);
    }
    let f = t.flush();
    assert_eq!(f.rows, vec![(1, 1, 1), (1, 2, 2), (2, 1, 1)]);
    assert_eq!(t.flush(), Flush::default(), "a flushed window starts from zero");
}

#[test]
fn unknown_child_resolves_at_flush_or_is_carried_once_then_dropped() {
    let mut t = Tally::new(LIMITS);
    t.associate(1, 10);
    assert_eq!(t.record(10, 30), Recorded::Pending);
    assert_eq!(t.record(10, 30), Recorded::Pending);
    assert_eq!(t.record(10, 40), Recorded::Pending);
    t.associate(3, 30); // arrives later in the same window
    let f = t.flush();
    assert_eq!((f.rows.clone(), f.resolved_late, f.carried), (vec![(1, 3, 2)], 2, 1));

    t.associate(4, 40); // one window late: counted in this window
    assert_eq!(t.record(10, 50), Recorded::Pending);
    let f = t.flush();
    assert_eq!((f.rows.clone(), f.resolved_late, f.carried, f.dropped), (vec![(1, 4, 1)], 1, 1, 0));

    let f = t.flush(); // child 50 never announced
    assert_eq!((f.rows.len(), f.carried, f.dropped), (0, 0, 1));
    assert_eq!(t.pending_pairs(), 0);
}

#[test]
fn pending_pairs_are_capped() {
    let mut t = Tally::new(Limits { max_pending: 2, ..LIMITS });
    assert_eq!(t.record(1, 2), Recorded::Pending);
    assert_eq!(t.record(1, 3), Recorded::Pending);
    assert_eq!(t.record(1, 2), Recorded::Pending, "a held pair still counts");
    assert_eq!(t.record(1, 4), Recorded::Shed);
    t.flush();
    assert_eq!(t.record(1, 5), Recorded::Shed, "carried pairs count against the cap");
}

#[test]
fn schedule_closes_aligned_windows_by_the_injected_clock() {
    let clock = ManualClock::new(120_500);
    let mut s = Schedule::new(Duration::from_secs(60), Arc::new(clock.clone()));
    assert_eq!(s.open_window(), 120_000);
    assert_eq!(s.until_due(), Duration::from_millis(59_500));
    assert_eq!(s.close_due(), None);
    clock.set(179_999);
    assert_eq!(s.close_due(), None);
    clock.set(180_000);
    assert_eq!(s.close_due(), Some(120_000));
    assert_eq!(s.open_window(), 180_000);
    clock.set(400_000); // suspended across windows: one report, then realigned
    assert_eq!(s.close_due(), Some(180_000));
    assert_eq!(s.open_window(), 360_000);
}

#[derive(Debug, Clone)]
enum Op {
    Associate(u8, u8),
    Message(u8, u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    // Children 0..8 may be associated; 8 and 9 never are.
    prop_oneof![
        1 => (0u8..3, 0u8..8).prop_map(|(p, c)| Op::Associate(p, c)),
        6 => (0u8..10, 0u8..10).prop_map(|(s, d)| Op::Message(s, d)),
        1 => (0u16..1_500).prop_map(Op::Advance),
    ]
}

/// A message as the model keeps it: window start, source, destination, parents at read time.
type Held = (i64, u8, u8, Option<(u8, u8)>);

/// The documented policy written the slow, obvious way: every message is kept as a record.
#[derive(Default)]
struct Model {
    parent: BTreeMap<u8, u8>,
    held: Vec<Held>,
}

impl Model {
    fn close(&mut self, window: i64) -> BTreeMap<(Id, Id), u64> {
        let mut out = BTreeMap::new();
        let mut keep = Vec::new();
        for (w, s, d, known) in self.held.drain(..) {
            let now = self.parent.get(&s).zip(self.parent.get(&d)).map(|(a, b)| (*a, *b));
            let resolved = if w == window { known.or(now) } else { now };
            match resolved {
                Some((ps, pd)) => *out.entry((Id::from(ps), Id::from(pd))).or_insert(0) += 1,
                None if w == window => keep.push((w, s, d, None)),
                None => {} // second window unresolved: dropped
            }
        }
        self.held = keep;
        out
    }
}

proptest! {
    #[test]
    fn tally_matches_the_model_over_many_windows(ops in proptest::collection::vec(op(), 1..300)) {
        let clock = ManualClock::new(10_000);
        let mut sched = Schedule::new(Duration::from_secs(1), Arc::new(clock.clone()));
        let mut tally = Tally::new(LIMITS);
        let mut model = Model::default();
        let mut seen = 0u64;
        let mut reported = 0u64;
        let mut dropped = 0u64;
        for op in ops {
            match op {
                Op::Associate(p, c) => {
                    tally.associate(Id::from(p), Id::from(c));
                    model.parent.insert(c, p);
                }
                Op::Message(s, d) => {
                    seen += 1;
                    tally.record(Id::from(s), Id::from(d));
                    let known = model.parent.get(&s).zip(model.parent.get(&d)).map(|(a, b)| (*a, *b));
                    model.held.push((sched.open_window(), s, d, known));
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(u64::from(ms)));
                    if let Some(window) = sched.close_due() {
                        let f = tally.flush();
                        prop_assert_eq!(rows(&f), model.close(window));
                        reported += f.rows.iter().map(|r| r.2).sum::<u64>();
                        dropped += f.dropped;
                    }
                }
            }
        }
        // Conservation: every message read is reported, dropped, or still in an open window
        // (the model holds every message of the open window plus the carried ones).
        prop_assert_eq!(seen, reported + dropped + model.held.len() as u64);
    }
}
