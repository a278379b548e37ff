//! Unit tests of the last-seen window, including a model check against a naive map.
use std::collections::HashMap;

use proptest::prelude::*;
use switchboard_core::{Clock, ManualClock};

use super::*;

const T0: i64 = 1_700_000_000_000;

#[test]
fn a_user_counts_once_however_often_it_reports() {
    let mut w = LastSeen::new(180);
    assert_eq!(w.record(1, T0, T0), Recorded::New);
    assert_eq!(w.record(1, T0 + 1000, T0 + 1000), Recorded::Refreshed);
    assert_eq!(w.record(1, T0 + 1000, T0 + 1000), Recorded::Unchanged);
    assert_eq!(w.record(2, T0 + 1000, T0 + 1000), Recorded::New);
    assert_eq!(w.online(T0 + 1000), 2);
}

#[test]
fn users_leave_exactly_three_minutes_after_their_last_report() {
    let clock = ManualClock::new(T0);
    let mut w = LastSeen::new(180);
    w.record(1, clock.now_ms(), clock.now_ms());
    clock.advance(std::time::Duration::from_secs(60));
    w.record(2, clock.now_ms(), clock.now_ms());
    // User 1's report second is T0/1000; it counts through second T0/1000 + 179.
    clock.set(T0 + 179_999);
    assert_eq!(w.online(clock.now_ms()), 2);
    clock.set(T0 + 180_000);
    assert_eq!(w.online(clock.now_ms()), 1);
    clock.set(T0 + 60_000 + 180_000);
    assert_eq!(w.online(clock.now_ms()), 0);
}

#[test]
fn reordered_and_expired_reports_do_not_move_anyone_back() {
    let mut w = LastSeen::new(180);
    let now = T0 + 10_000;
    assert_eq!(w.record(1, now, now), Recorded::New);
    assert_eq!(w.record(1, now - 5000, now), Recorded::Unchanged);
    assert_eq!(w.record(2, now - 181_000, now), Recorded::Expired);
    assert_eq!(w.online(now), 1);
    assert_eq!(w.online(now + 179_000), 1);
}

#[test]
fn a_clock_stepping_back_cannot_corrupt_newer_buckets() {
    let mut w = LastSeen::new(10);
    w.record(1, T0 + 10_000, T0 + 10_000);
    // Same ring slot as T0 + 10 s, ten seconds older, judged by a clock that stepped back.
    assert_eq!(w.record(2, T0, T0), Recorded::Expired);
    assert_eq!(w.online(T0 + 10_000), 1);
}

#[test]
fn future_stamps_count_as_now() {
    let mut w = LastSeen::new(3);
    w.record(1, T0 + 5_000, T0);
    assert_eq!(w.online(T0), 1);
    assert_eq!(w.online(T0 + 3_000), 0, "a future stamp must not outlive the window");
}

#[test]
fn eviction_forgets_only_users_outside_the_window() {
    let mut w = LastSeen::new(180);
    w.record(1, T0, T0);
    w.record(2, T0 + 100_000, T0 + 100_000);
    assert_eq!(w.evict(T0 + 180_000), 1);
    assert_eq!(w.tracked(), 1);
    assert_eq!(w.online(T0 + 180_000), 1);
    // A user coming back after eviction is new again.
    assert_eq!(w.record(1, T0 + 181_000, T0 + 181_000), Recorded::New);
    assert_eq!(w.online(T0 + 181_000), 2);
}

#[test]
fn a_million_users_are_counted_exactly() {
    let mut w = LastSeen::new(180);
    // Spread over 200 s so some are already outside the window at the end.
    for s in 0..200u128 {
        let seen = T0 + i64::try_from(s).unwrap() * 1000;
        for u in (s..1_000_000).step_by(200) {
            w.record(u * 7919, seen, seen);
        }
    }
    let now = T0 + 199_000;
    let expected = (0..1_000_000u128).filter(|u| u % 200 >= 20).count() as u64;
    assert_eq!(w.online(now), expected);
}

proptest! {
    /// Against a naive "latest second per user" map, for any sequence of (mostly forward) time.
    #[test]
    fn matches_a_naive_model(events in prop::collection::vec((0u128..50, 0i64..4_000, 0i64..3_000), 1..400)) {
        let window = 20;
        let mut w = LastSeen::new(window);
        let mut model: HashMap<u128, i64> = HashMap::new();
        let mut now = T0;
        for (user, back_ms, step_ms) in events {
            now += step_ms;
            let seen = now - back_ms * 10;
            let now_s = now.div_euclid(1000);
            let sec = seen.div_euclid(1000).min(now_s);
            if now_s - sec < i64::from(window) {
                let e = model.entry(user).or_insert(sec);
                *e = (*e).max(sec);
            }
            w.record(user, seen, now);
            if step_ms % 7 == 0 {
                w.evict(now);
            }
            let expected = model.values().filter(|s| now_s - **s < i64::from(window)).count() as u64;
            prop_assert_eq!(w.online(now), expected);
        }
    }
}
