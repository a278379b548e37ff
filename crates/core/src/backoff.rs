//! Retry delays: exponential backoff with jitter, the one used wherever something is retried
//! (the aggregator and control agents reconnecting, the bus and the store waiting for their
//! server at start, the presence forwarder and the tracker worker retrying a failed step).
//!
//! The n-th consecutive failure waits a random time in `[d/2, d]` with `d = min(max, min·2ⁿ)`
//! ("equal jitter"): many clients that lost the same server do not come back in lockstep, and
//! the delay never collapses to zero. A connection that got established resets the sequence.
use std::time::Duration;

use rand::Rng;

/// Backoff state for one reconnecting client.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), failures: 0 }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.failures.min(20));
        let ceiling = exp.min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// The delay before the next attempt if it ends within `remaining` (a caller's deadline
    /// minus now), else `None`: give up. Counts one more failure either way.
    pub fn next_delay_within(&mut self, remaining: Duration) -> Option<Duration> {
        Some(self.next_delay()).filter(|wait| *wait < remaining)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(3);
        let mut b = Backoff::new(min, max);
        for n in 0..10u32 {
            let ceiling = (min * 2u32.pow(n)).min(max);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {n}: {d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= min);
        assert_eq!(
            b.next_delay_within(min / 4),
            None,
            "a delay in [min, 2·min] does not fit in min/4"
        );
        assert!(b.next_delay_within(Duration::from_secs(60)).is_some());
    }
}
