//! Ping jitter as clients see it: how far each interval between two consecutive Pings is from
//! the nominal interval. A lock-free histogram with 1 ms buckets, shared by every simulated
//! client of a process.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Jitter above this many ms lands in the last bucket.
const MAX_MS: usize = 5_000;

/// Histogram of |interval − nominal| in milliseconds.
#[derive(Debug)]
pub struct Jitter {
    nominal: Duration,
    buckets: Vec<AtomicU64>,
    /// Off during a warm-up (ramping clients make the gateway busy accepting connections).
    recording: AtomicBool,
}

/// Percentiles of a [`Jitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterSummary {
    /// Intervals measured.
    pub samples: u64,
    /// Median jitter, ms.
    pub p50_ms: u64,
    /// 99th percentile jitter, ms.
    pub p99_ms: u64,
    /// Largest jitter, ms (capped at 5 s).
    pub max_ms: u64,
}

impl Jitter {
    /// An empty histogram for Pings expected every `nominal`.
    pub fn new(nominal: Duration) -> Self {
        Self {
            nominal,
            buckets: (0..=MAX_MS).map(|_| AtomicU64::new(0)).collect(),
            recording: AtomicBool::new(true),
        }
    }

    /// Starts or stops recording (samples while stopped are ignored).
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Records one interval between consecutive Pings.
    pub fn record(&self, interval: Duration) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let ms = interval.abs_diff(self.nominal).as_millis();
        let i = usize::try_from(ms).unwrap_or(MAX_MS).min(MAX_MS);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Percentiles so far.
    pub fn summary(&self) -> JitterSummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let samples: u64 = counts.iter().sum();
        let pct = |p: f64| -> u64 {
            let rank = ((samples as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return ms as u64;
                }
            }
            0
        };
        let max_ms = counts.iter().rposition(|c| *c > 0).unwrap_or(0) as u64;
        JitterSummary { samples, p50_ms: pct(0.50), p99_ms: pct(0.99), max_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_intervals() {
        let j = Jitter::new(Duration::from_secs(1));
        for _ in 0..98 {
            j.record(Duration::from_millis(1_002));
        }
        j.record(Duration::from_millis(950));
        j.record(Duration::from_secs(30));
        let s = j.summary();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_ms, 2);
        assert_eq!(s.p99_ms, 50);
        assert_eq!(s.max_ms, 5_000);
        let off = Jitter::new(Duration::from_secs(1));
        off.set_recording(false);
        off.record(Duration::from_secs(2));
        assert_eq!(off.summary().samples, 0);
    }
}
