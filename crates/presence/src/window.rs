//! The last-seen window: "how many unique users reported in the last N seconds", exact and
//! answered in O(N buckets) — constant time, independent of the number of users.
//!
//! Every user lives in exactly one per-second bucket: the second of its latest report. A newer
//! report moves the user from its old bucket to the new one (decrement, increment). The answer
//! is the sum of the buckets inside the window — 180 additions for 3 minutes, whether 10 or
//! 10 million users are online. Buckets form a ring indexed by `second % N`; a bucket whose
//! tagged second fell out of the window is reset on reuse, so nothing is ever scanned per
//! query. The `users` map is only needed to know a user's previous bucket; [`LastSeen::evict`]
//! drops users that left the window so memory follows the online population.
//!
//! Granularity is one second: a report in second `s` counts while `now_s - s < N`.
use hashbrown::HashMap;

/// What [`LastSeen::record`] did with one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The user was not online; now it is.
    New,
    /// The user was online; its last-seen moved forward.
    Refreshed,
    /// The user was already seen at this second or later (duplicate or reordered report).
    Unchanged,
    /// The report is older than the window: it cannot make anyone online.
    Expired,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The Unix second this bucket currently counts.
    sec: i64,
    count: u64,
}

/// Unique users seen in the last `window_secs` seconds.
#[derive(Debug)]
pub struct LastSeen {
    window_secs: i64,
    /// User id → Unix second of its latest report.
    users: HashMap<u128, i64>,
    buckets: Vec<Bucket>,
    /// Latest "now" seen by [`LastSeen::record`]: if the clock steps back, records are still
    /// judged against it, so an old second can never overwrite a newer bucket in the ring.
    high_water_s: i64,
}

impl LastSeen {
    /// An empty window `window_secs` seconds long.
    ///
    /// # Panics
    /// Panics if `window_secs` is 0.
    pub fn new(window_secs: u32) -> Self {
        assert!(window_secs > 0, "the window must be at least one second");
        let n = usize::try_from(window_secs).unwrap_or(usize::MAX);
        Self {
            window_secs: i64::from(window_secs),
            users: HashMap::new(),
            buckets: vec![Bucket { sec: i64::MIN, count: 0 }; n],
            high_water_s: i64::MIN,
        }
    }

    /// Records that `user` reported at `seen_ms`, judged at `now_ms`. A report stamped in the
    /// future (clock skew between gateway and status) counts as now, so it cannot outlive the
    /// window.
    pub fn record(&mut self, user: u128, seen_ms: i64, now_ms: i64) -> Recorded {
        let now_s = now_ms.div_euclid(1000);
        let sec = seen_ms.div_euclid(1000).min(now_s);
        self.high_water_s = self.high_water_s.max(now_s);
        if !self.in_window(sec, self.high_water_s) {
            return Recorded::Expired;
        }
        // One hash lookup per report: this is the ingest hot path.
        let previous = match self.users.entry(user) {
            hashbrown::hash_map::Entry::Occupied(mut e) => {
                let old = *e.get();
                if old >= sec {
                    return Recorded::Unchanged;
                }
                e.insert(sec);
                Some(old)
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(sec);
                None
            }
        };
        let outcome = match previous {
            Some(old) if self.in_window(old, self.high_water_s) => {
                let b = self.bucket_mut(old);
                if b.sec == old {
                    b.count -= 1;
                }
                Recorded::Refreshed
            }
            _ => Recorded::New,
        };
        let b = self.bucket_mut(sec);
        if b.sec != sec {
            // The bucket still holds a second that left the window: reuse it.
            *b = Bucket { sec, count: 0 };
        }
        b.count += 1;
        outcome
    }

    /// Unique users with a report in the window ending at `now_ms`.
    pub fn online(&self, now_ms: i64) -> u64 {
        let now_s = now_ms.div_euclid(1000);
        self.buckets.iter().filter(|b| self.in_window(b.sec, now_s)).map(|b| b.count).sum()
    }

    /// Forgets users whose last report left the window; returns how many. O(users), so callers
    /// run it every few seconds, not per query.
    pub fn evict(&mut self, now_ms: i64) -> usize {
        let now_s = now_ms.div_euclid(1000);
        let before = self.users.len();
        let window = self.window_secs;
        self.users.retain(|_, sec| now_s.saturating_sub(*sec) < window);
        before - self.users.len()
    }

    /// Users currently remembered (online ones plus not-yet-evicted ones).
    pub fn tracked(&self) -> usize {
        self.users.len()
    }

    /// Every remembered user with its last-seen second, for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (u128, i64)> + '_ {
        self.users.iter().map(|(u, s)| (*u, *s))
    }

    fn in_window(&self, sec: i64, now_s: i64) -> bool {
        sec <= now_s && now_s.saturating_sub(sec) < self.window_secs
    }

    fn bucket_mut(&mut self, sec: i64) -> &mut Bucket {
        let i = usize::try_from(sec.rem_euclid(self.window_secs)).unwrap_or(0);
        &mut self.buckets[i]
    }
}

#[cfg(test)]
mod tests;
