//! Synthetic Logektor events: a small, skewed mix of actions and subjects so the reports
//! and the dashboard show something realistic. Feeds `switchboard demo` and the benchmark.
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use switchboard_core::Ctx;

const ACTIONS: [&str; 4] = ["view", "view", "click", "share"];
const SUBJECT_TYPES: [&str; 3] = ["article", "video", "comment"];

/// Builds batches of events.
pub struct Generator {
    rng: SmallRng,
}

impl Generator {
    /// A generator with a fixed seed (reproducible runs).
    pub fn new(seed: u64) -> Self {
        Self { rng: SmallRng::seed_from_u64(seed) }
    }

    /// One event at `ts_ms`.
    pub fn event(&mut self, ts_ms: i64) -> Value {
        // Cubing a uniform number skews ids towards small values: a few popular subjects.
        let u: f64 = self.rng.random();
        let subject_id = (u * u * u * 500.0) as i64;
        json!({
            "objectId": self.rng.random_range(0..5000),
            "objectType": "user",
            "action": ACTIONS[self.rng.random_range(0..ACTIONS.len())],
            "subjectId": subject_id,
            "subjectType": SUBJECT_TYPES[self.rng.random_range(0..SUBJECT_TYPES.len())],
            "datetimeStamp": ts_ms,
        })
    }

    /// A JSON-array body of `n` events at `ts_ms`.
    pub fn batch_body(&mut self, n: usize, ts_ms: i64) -> Vec<u8> {
        let events: Vec<Value> = (0..n).map(|_| self.event(ts_ms)).collect();
        serde_json::to_vec(&events).unwrap_or_default()
    }
}

/// Posts a batch of `batch` events to `url` every `every` until `ctx.shutdown`; failures are
/// logged and the loop goes on (the demo must keep running while the collector restarts).
pub fn spawn_feed(url: String, batch: usize, every: Duration, ctx: &Ctx) {
    let shutdown = ctx.shutdown.clone();
    ctx.spawn(async move {
        let client = reqwest::Client::new();
        let mut generator = Generator::new(7);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = switchboard_core::Clock::now_ms(&switchboard_core::SystemClock);
            let body = generator.batch_body(batch, now);
            let sent = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(res) if res.status().is_success() => {}
                Ok(res) => {
                    tracing::warn!(status = %res.status(), "demo feed: collector refused a batch")
                }
                Err(e) => tracing::warn!(error = %switchboard_core::describe_error(&e), "demo feed: collector unreachable"),
            }
        }
    });
}
