//! A token bucket: at most `burst` events at once, refilled at `per_second`.
//!
//! Used on both ends: an agent limits the commands it executes, the console limits the
//! replies it accepts from each agent. Time is passed in, so tests drive it without sleeping.
use std::time::{Duration, Instant};

/// Token bucket rate limit.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `per_second` sustained, `burst` at once; starts full at `now`.
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_second: per_second.max(0.0), burst, tokens: burst, last: now }
    }

    /// Takes one token if available at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until one token is available again (zero when one is).
    pub fn retry_after(&self) -> Duration {
        if self.tokens >= 1.0 || self.per_second <= 0.0 {
            return Duration::ZERO;
        }
        // A tiny rate gives a wait too long for a Duration; "never" is the honest answer.
        Duration::try_from_secs_f64((1.0 - self.tokens) / self.per_second).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 3, t0);
        assert!((0..3).all(|_| r.try_take(t0)));
        assert!(!r.try_take(t0));
        assert_eq!(r.retry_after(), Duration::from_millis(100));
        assert!(!r.try_take(t0 + Duration::from_millis(50)));
        assert!(r.try_take(t0 + Duration::from_millis(101)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| r.try_take(later)).count(), 3);
    }

    #[test]
    fn a_tiny_rate_does_not_overflow_the_retry_hint() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(1e-300, 1, t0);
        assert!(r.try_take(t0));
        assert!(!r.try_take(t0));
        assert_eq!(r.retry_after(), Duration::MAX);
    }
}
