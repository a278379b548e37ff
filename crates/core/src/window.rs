//! Clocks and wall-clock-aligned windows.
//!
//! Everything that counts "per minute" or "in the last 3 minutes" takes a [`Clock`] so tests
//! can drive time with a [`ManualClock`] instead of sleeping.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of Unix time in milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let d =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to. Cheap to clone; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Fixed-length windows aligned to multiples of `len` since the Unix epoch
/// (so 60 s windows start on wall-clock minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    len_ms: i64,
}

impl Windows {
    /// Windows of length `len`.
    ///
    /// # Panics
    /// Panics if `len` is shorter than one millisecond.
    pub fn new(len: Duration) -> Self {
        let len_ms = i64::try_from(len.as_millis()).unwrap_or(i64::MAX);
        assert!(len_ms > 0, "window length must be at least 1 ms");
        Self { len_ms }
    }

    /// Window length in milliseconds.
    pub fn len_ms(&self) -> i64 {
        self.len_ms
    }

    /// Start of the window containing `t_ms`.
    pub fn start_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.len_ms) * self.len_ms
    }

    /// Start of the window after the one containing `t_ms`.
    pub fn next_start(&self, t_ms: i64) -> i64 {
        self.start_of(t_ms).saturating_add(self.len_ms)
    }

    /// Time from `t_ms` until the next window boundary.
    pub fn until_next(&self, t_ms: i64) -> Duration {
        let ms = self.next_start(t_ms) - t_ms;
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minute_windows_align_to_wall_clock() {
        let w = Windows::new(Duration::from_secs(60));
        assert_eq!(w.start_of(120_500), 120_000);
        assert_eq!(w.next_start(120_500), 180_000);
        assert_eq!(w.until_next(179_999), Duration::from_millis(1));
        assert_eq!(w.start_of(-1), -60_000);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        let c2 = c.clone();
        c.advance(Duration::from_millis(500));
        assert_eq!(c2.now_ms(), 1_500);
        c.set(7);
        assert_eq!(c2.now_ms(), 7);
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_its_window(t in -1_000_000_000i64..1_000_000_000, len in 1u64..10_000_000) {
            let w = Windows::new(Duration::from_millis(len));
            let s = w.start_of(t);
            prop_assert!(s <= t && t < s + w.len_ms());
            prop_assert_eq!(s % w.len_ms(), 0);
        }
    }
}
