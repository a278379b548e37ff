//! `bench tracker --soak D --soak-rate R`: a steady load for a long time, to show that memory
//! and the journal stay flat while the store grows only by what is folded.
//!
//! Collector and worker run in this process as in the end-to-end phase; the clients send
//! batches on a fixed schedule (R events/s) instead of as fast as they can. Every
//! `SAMPLE_EVERY` the process RSS, the store's size on disk, the journal backlog and the
//! events folded are sampled and printed; the summary compares the first and the last
//! minute of RSS.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_bus::Bus;
use switchboard_core::Ctx;
use switchboard_core::stats::{quantile, rss_bytes};
use switchboard_store::Store;

use crate::config::{BenchArgs, CollectorArgs, WorkerArgs};
use crate::journal::Sink;
use crate::{Error, Result, outbox, report, role};

/// How often the soak samples and prints.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One sample.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Sample {
    at_s: f64,
    rss_bytes: u64,
    store_bytes: u64,
    backlog_events: i64,
    folded_events: i64,
}

/// What one soak measured.
#[derive(Debug, serde::Serialize)]
pub(super) struct Soak {
    mode: &'static str,
    seconds: f64,
    target_events_per_s: u64,
    sent_events: u64,
    sent_events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    shed_503: u64,
    rss_first_minute_bytes: u64,
    rss_last_minute_bytes: u64,
    rss_max_bytes: u64,
    store_start_bytes: u64,
    store_end_bytes: u64,
    samples: Vec<Sample>,
}

/// Runs the soak in `mode` on `bus` and `store` (`db_file` names SQLite's file, for its size).
pub(super) async fn run(
    args: &BenchArgs,
    soak: Duration,
    bodies: &Arc<Vec<Bytes>>,
    mode: &'static str,
    (bus, store): (&Bus, &Store),
    db_file: Option<&std::path::Path>,
    ctx: &Ctx,
) -> Result<Soak> {
    let rate = args.soak_rate;
    if rate == 0 {
        return Err(Error::config("--soak-rate must be positive"));
    }
    let phase_ctx = Ctx::new();
    let sink = Sink::for_deployment(bus, store);
    let addr = role::start_collector(&CollectorArgs::ephemeral(), sink, None, &phase_ctx).await?;
    let mut worker = WorkerArgs::with_idle_poll(Duration::from_millis(2));
    worker.consumer = "tracker-bench".into();
    role::start_worker(&worker, bus.clone(), store.clone(), &phase_ctx)?;

    let before = report::total(store).await?;
    let started = Instant::now();
    let until = started + soak;
    let sent = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    // Batch k leaves at `started + k × batch / rate`: a schedule, not a closed loop, so a slow
    // answer shows as latency instead of silently lowering the load.
    let every = Duration::from_secs_f64(args.batch as f64 / rate as f64);
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let url = format!("http://{addr}/track/batch");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        let (next, sent, shed, cancel) =
            (next.clone(), sent.clone(), shed.clone(), ctx.shutdown.clone());
        let batch = args.batch as u64;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let at = started + every.mul_f64(k as f64);
                if at >= until || cancel.is_cancelled() {
                    return Ok::<_, Error>(latencies);
                }
                tokio::time::sleep_until(at.into()).await;
                let body = &bodies[k as usize % bodies.len()];
                // Never gives up: the schedule, not a deadline, ends the soak.
                if let Some(latency) =
                    super::post_until_accepted(&client, &url, body, &shed, || false).await?
                {
                    latencies.push(latency);
                    sent.fetch_add(batch, Ordering::Relaxed);
                }
            }
        });
    }

    let store_start = store_bytes(store, db_file).await;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at((started + SAMPLE_EVERY).into(), SAMPLE_EVERY);
    eprintln!("bench tracker: soak, {mode}, {rate} events/s for {soak:?}");
    eprintln!(
        "  {:>7} {:>9} {:>10} {:>12} {:>12}",
        "at s", "RSS MiB", "store MiB", "backlog", "folded"
    );
    let sample = || async {
        Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(std::process::id()).unwrap_or(0),
            store_bytes: store_bytes(store, db_file).await,
            backlog_events: outbox_or_stream_backlog(bus, store).await,
            folded_events: report::total(store).await.unwrap_or(-1),
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(until.into()) => break,
            () = ctx.shutdown.cancelled() => break,
        }
        let s = sample().await;
        let backlog =
            if s.backlog_events < 0 { "n/a".to_owned() } else { s.backlog_events.to_string() };
        eprintln!(
            "  {:>7.0} {:>9.1} {:>10.1} {:>12} {:>12}",
            s.at_s,
            mib(s.rss_bytes),
            mib(s.store_bytes),
            backlog,
            s.folded_events
        );
        samples.push(s);
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(|e| Error::Bench(format!("load task: {e}")))??);
    }
    let seconds = started.elapsed().as_secs_f64();
    // The last sample once the worker has folded everything sent: nothing left behind.
    let sent_events = sent.load(Ordering::Relaxed);
    let caught_up = Instant::now() + args.timeout;
    super::wait_total(store, before + i64::try_from(sent_events).unwrap_or(i64::MAX), caught_up)
        .await?;
    samples.push(sample().await);
    phase_ctx.drain(Duration::from_secs(10)).await;
    if ctx.shutdown.is_cancelled() {
        return Err(Error::Bench("interrupted".into()));
    }
    latencies.sort_unstable();
    let minute = |from_end: bool| {
        let per_minute = (60.0 / SAMPLE_EVERY.as_secs_f64()) as usize;
        let n = samples.len().min(per_minute).max(1);
        let part = if from_end {
            &samples[samples.len().saturating_sub(n)..]
        } else {
            &samples[..n.min(samples.len())]
        };
        part.iter().map(|s| s.rss_bytes).max().unwrap_or(0)
    };
    let ms = |q: f64| quantile(&latencies, q).as_secs_f64() * 1000.0;
    Ok(Soak {
        mode,
        seconds,
        target_events_per_s: rate,
        sent_events,
        sent_events_per_s: sent_events as f64 / seconds.max(1e-9),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        shed_503: shed.load(Ordering::Relaxed),
        rss_first_minute_bytes: minute(false),
        rss_last_minute_bytes: minute(true),
        rss_max_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        store_start_bytes: store_start,
        store_end_bytes: samples.last().map_or(store_start, |s| s.store_bytes),
        samples,
    })
}

/// Events accepted but not yet folded: the outbox in embedded mode; on a stream, the gap
/// between what the collectors counted and what the read model holds is not known here, so
/// it is reported as -1.
async fn outbox_or_stream_backlog(bus: &Bus, store: &Store) -> i64 {
    match Sink::for_deployment(bus, store) {
        Sink::Outbox(_) | Sink::Fold(_) => outbox::pending_events(store).await.unwrap_or(-1),
        Sink::Stream(_) | Sink::Discard => -1,
    }
}

/// The store's size on disk: SQLite's file and its WAL, or PostgreSQL's database size.
async fn store_bytes(store: &Store, db_file: Option<&std::path::Path>) -> u64 {
    match store {
        Store::Sqlite(_) => db_file.map_or(0, |f| {
            let wal = f.with_extension("db-wal");
            [f, wal.as_path()]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        }),
        Store::Postgres(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                .fetch_one(pool)
                .await
                .map_or(0, |n| u64::try_from(n).unwrap_or(0))
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints the summary of each soak and one JSON line.
pub(super) fn print(args: &BenchArgs, soaks: &[Soak]) {
    println!(
        "tracker soak: batches of {}, {} concurrent clients on a fixed schedule, samples every {:?}\n",
        args.batch, args.concurrency, SAMPLE_EVERY
    );
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>8} {:>8} {:>24} {:>20}",
        "mode",
        "seconds",
        "target/s",
        "sent/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB 1st → last min",
        "store MiB start → end"
    );
    for s in soaks {
        println!(
            "{:<14} {:>8.0} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>24} {:>20}",
            s.mode,
            s.seconds,
            s.target_events_per_s,
            s.sent_events_per_s,
            s.p50_ms,
            s.p99_ms,
            format!(
                "{:.1} → {:.1} (max {:.1})",
                mib(s.rss_first_minute_bytes),
                mib(s.rss_last_minute_bytes),
                mib(s.rss_max_bytes)
            ),
            format!("{:.1} → {:.1}", mib(s.store_start_bytes), mib(s.store_end_bytes)),
        );
    }
    let line = serde_json::json!({ "bench": "tracker-soak", "soaks": soaks });
    println!("\n{line}");
}
