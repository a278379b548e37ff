//! Status-side measurements: reports/s through the real ingest path (memory bus → decode →
//! window → snapshots in SQLite → acks), and the cost of one count query at a million users
//! against the reference, a naive scan of a last-seen map.
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_bus::Bus;
use switchboard_core::{Clock, Ctx, SystemClock};
use switchboard_store::Store;

use crate::proto::Status;
use crate::report::{Batch, Report, SUBJECT, stream_config};
use crate::status::{self, StatusArgs};
use crate::window::LastSeen;
use crate::{Error, Result};

/// Reports per published batch, as a busy gateway would send.
const BATCH: usize = 2_000;

/// What the status measurements found.
#[derive(Debug, Clone, Copy)]
pub struct IngestResult {
    /// Reports ingested.
    pub reports: u64,
    /// Distinct users among them.
    pub users: u64,
    /// Wall time from replica start to the last report counted.
    pub secs: f64,
    /// One `online()` at `users` users, ns.
    pub query_ns: f64,
    /// One naive scan of a `users`-entry map, ns.
    pub naive_query_ns: f64,
}

impl IngestResult {
    /// Reports per second.
    pub fn rate(&self) -> f64 {
        self.reports as f64 / self.secs.max(1e-9)
    }
}

/// Publishes `reports` reports from `users` users, then times a fresh status replica
/// consuming them all.
///
/// # Errors
/// Bus, store or gRPC failures, or the replica never catches up.
pub async fn run(reports: usize, users: usize) -> Result<IngestResult> {
    let users = users.max(1);
    let bus = Bus::memory();
    bus.ensure_stream(&stream_config()).await?;
    let now = SystemClock.now_ms();
    let id = |u: usize| (u as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    let mut seq = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..reports {
        let seen_ms = now - 1_000 + i64::try_from(i % 1_000).unwrap_or(0);
        batch.push(Report { client: id(i % users), seen_ms, status: Status::at(seen_ms) });
        if batch.len() == BATCH || i + 1 == reports {
            seq += 1;
            let b = Batch {
                gateway_id: "bench".into(),
                batch_seq: seq,
                reports: std::mem::take(&mut batch),
                ..Batch::default()
            };
            bus.publish_durable(SUBJECT, b.encode(), None).await?;
        }
    }
    // One more user in the very last message: when it is counted, everything before it is.
    let last = Batch {
        gateway_id: "bench".into(),
        batch_seq: seq + 1,
        reports: vec![Report { client: id(users), seen_ms: now, status: Status::Even }],
        ..Batch::default()
    };
    bus.publish_durable(SUBJECT, last.encode(), None).await?;
    let want = u64::try_from(users.min(reports)).unwrap_or(u64::MAX) + 1;

    let dir =
        std::env::temp_dir().join(format!("switchboard-presence-bench-{}", std::process::id()));
    let store_url = format!("sqlite://{}", dir.join("presence.db").display());
    let store = Store::connect(&store_url).await?;
    let ctx = Ctx::new();
    let started = Instant::now();
    let addr = status::start(
        &StatusArgs::loopback(),
        bus,
        store.clone(),
        Arc::new(SystemClock),
        ctx.clone(),
    )
    .await?;
    let url = format!("http://{addr}");
    let deadline = started + Duration::from_secs(300);
    loop {
        if status::fetch_online(&url).await? == want {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Bench("status replica did not ingest every report in 300 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    ctx.drain(Duration::from_secs(30)).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let (query_ns, naive_query_ns) = query_costs(users, now);
    Ok(IngestResult { reports: reports as u64 + 1, users: want, secs, query_ns, naive_query_ns })
}

/// Nanoseconds per count at `users` users: the bucketed window vs a scan of a plain map.
fn query_costs(users: usize, now: i64) -> (f64, f64) {
    let mut w = LastSeen::new(status::WINDOW_SECS);
    let mut naive: hashbrown::HashMap<u128, i64> = hashbrown::HashMap::with_capacity(users);
    for u in 0..users {
        let seen = now - i64::try_from(u % 200).unwrap_or(0) * 1000;
        w.record(u as u128, seen, now);
        naive.insert(u as u128, seen);
    }
    let rounds = 1_000u32;
    let t = Instant::now();
    let mut sink = 0u64;
    for _ in 0..rounds {
        sink = sink.wrapping_add(std::hint::black_box(&w).online(now));
    }
    let ours = t.elapsed().as_nanos() as f64 / f64::from(rounds);
    let scans = 5u32;
    let t = Instant::now();
    for _ in 0..scans {
        let n = std::hint::black_box(&naive).values().filter(|s| now - **s < 180_000).count();
        sink = sink.wrapping_add(n as u64);
    }
    let naive_ns = t.elapsed().as_nanos() as f64 / f64::from(scans);
    std::hint::black_box(sink);
    (ours, naive_ns)
}
