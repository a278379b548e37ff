//! `switchboard bench tracker`: events/s through the collector alone (202s) and end to end
//! until queryable, with p50/p99 acknowledgement latency, in embedded mode (and in
//! distributed mode when NATS and PostgreSQL URLs are given).
//!
//! The reference, measured in the same run, is the same collector with a journal that
//! forgets (HTTP + decoding + validation only): the gap to it is the price of durability.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use switchboard_bus::Bus;
use switchboard_core::{Clock, Ctx, SystemClock};
use switchboard_store::Store;

use crate::config::{BenchArgs, CollectorArgs, WorkerArgs};
use crate::generator::Generator;
use crate::journal::Sink;
use crate::{Error, Result, report, role};

mod soak;

/// Distinct request bodies cycled through (the collector gives every event a fresh id).
const BODIES: usize = 64;

/// One measured line of the table.
#[derive(Debug, Serialize)]
struct Row {
    mode: &'static str,
    phase: &'static str,
    /// Workers folding in this phase (0: the phase has none).
    workers: u16,
    events: usize,
    seconds: f64,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    shed_503: u64,
}

struct Load {
    elapsed: Duration,
    latencies: Vec<Duration>,
    shed: u64,
}

/// Runs every phase and prints the table and the JSON line.
///
/// # Errors
/// A phase cannot start or does not finish within `--timeout`.
pub async fn run(args: BenchArgs, ctx: Ctx) -> Result<()> {
    if args.batch == 0 || args.concurrency == 0 || args.events < args.batch {
        return Err(Error::config(
            "--batch and --concurrency must be positive, --events ≥ --batch",
        ));
    }
    let mut generator = Generator::new(42);
    let now = SystemClock.now_ms();
    let bodies: Arc<Vec<Bytes>> =
        Arc::new((0..BODIES).map(|_| Bytes::from(generator.batch_body(args.batch, now))).collect());
    let dir = tempfile::tempdir()?;
    if let Some(duration) = args.soak {
        return soak_each_mode(&args, duration, &bodies, &dir, &ctx).await;
    }
    let mut rows = Vec::new();

    let bus = Bus::memory();
    // Warm-up (connections, allocator, page cache), not reported.
    let warm = BenchArgs { events: (args.events / 10).max(args.batch), ..args.clone() };
    collector_only(&warm, &bodies, "embedded", "warm-up", Sink::Discard, &ctx).await?;
    rows.push(
        collector_only(
            &args,
            &bodies,
            "embedded",
            "reference: HTTP + validation, no journal",
            Sink::Discard,
            &ctx,
        )
        .await?,
    );
    let store = temp_store(&dir, "collector").await?;
    rows.push(
        collector_only(
            &args,
            &bodies,
            "embedded",
            "collector → SQLite outbox (202)",
            Sink::Outbox(store.clone()),
            &ctx,
        )
        .await?,
    );
    rows.push(drain_backlog(&args, "embedded", &bus, &store).await?);
    for &workers in &args.workers {
        let store = temp_store(&dir, &format!("e2e-{workers}")).await?;
        rows.push(end_to_end(&args, &bodies, "embedded", workers, &bus, &store, &ctx).await?);
    }
    // No worker: the collector folds at its group commit (`tracker collector --fold`).
    let store = temp_store(&dir, "e2e-fold").await?;
    rows.push(end_to_end(&args, &bodies, "embedded", 0, &bus, &store, &ctx).await?);

    if let (Some(nats), Some(pg)) = (&args.bench_nats, &args.bench_postgres) {
        let bus = Bus::connect(nats).await?;
        let store = role::open_store(pg).await?;
        for &workers in &args.workers {
            let mode = "nats+postgres";
            rows.push(end_to_end(&args, &bodies, mode, workers, &bus, &store, &ctx).await?);
        }
        // Last, because without a worker its events stay in the stream.
        rows.push(
            collector_only(
                &args,
                &bodies,
                "nats+postgres",
                "collector → JetStream (202)",
                Sink::Stream(bus),
                &ctx,
            )
            .await?,
        );
    }
    print(&args, &rows);
    Ok(())
}

/// `--soak`: the steady load in embedded mode, then in distributed mode when URLs are given.
async fn soak_each_mode(
    args: &BenchArgs,
    duration: Duration,
    bodies: &Arc<Vec<Bytes>>,
    dir: &tempfile::TempDir,
    ctx: &Ctx,
) -> Result<()> {
    let file = dir.path().join("soak.db");
    let store = role::open_store(&format!("sqlite://{}", file.display())).await?;
    let bus = Bus::memory();
    let mut soaks = vec![
        soak::run(args, duration, bodies, "embedded", (&bus, &store), Some(&file), ctx).await?,
    ];
    if let (Some(nats), Some(pg)) = (&args.bench_nats, &args.bench_postgres) {
        let bus = Bus::connect(nats).await?;
        let store = role::open_store(pg).await?;
        let mode = "nats+postgres";
        soaks.push(soak::run(args, duration, bodies, mode, (&bus, &store), None, ctx).await?);
    }
    soak::print(args, &soaks);
    Ok(())
}

async fn temp_store(dir: &tempfile::TempDir, name: &str) -> Result<Store> {
    role::open_store(&format!("sqlite://{}", dir.path().join(format!("{name}.db")).display())).await
}

async fn collector_only(
    args: &BenchArgs,
    bodies: &Arc<Vec<Bytes>>,
    mode: &'static str,
    phase: &'static str,
    sink: Sink,
    ctx: &Ctx,
) -> Result<Row> {
    let phase_ctx = Ctx::new();
    let addr = role::start_collector(&CollectorArgs::ephemeral(), sink, None, &phase_ctx).await?;
    let load = load(format!("http://{addr}/track/batch"), bodies, args, ctx).await;
    phase_ctx.drain(Duration::from_secs(10)).await;
    let load = load?;
    Ok(row(mode, phase, 0, args.events, load.elapsed, &load))
}

/// The end-to-end phase without a worker.
const FOLD_PHASE: &str = "end to end, the collector folds (--fold)";

/// Times events from the first request until all are queryable, with `workers` workers, or
/// with none and the collector folding (`workers == 0`, [`FOLD_PHASE`]).
async fn end_to_end(
    args: &BenchArgs,
    bodies: &Arc<Vec<Bytes>>,
    mode: &'static str,
    workers: u16,
    bus: &Bus,
    store: &Store,
    ctx: &Ctx,
) -> Result<Row> {
    let phase_ctx = Ctx::new();
    let (sink, phase) = if workers == 0 {
        (Sink::Fold(store.clone()), FOLD_PHASE)
    } else {
        (Sink::for_deployment(bus, store), "end to end until queryable")
    };
    let before = report::total(store).await?;
    let addr = role::start_collector(&CollectorArgs::ephemeral(), sink, None, &phase_ctx).await?;
    let mut worker = WorkerArgs::with_idle_poll(Duration::from_millis(2));
    worker.consumer = "tracker-bench".into();
    for _ in 0..workers {
        role::start_worker(&worker, bus.clone(), store.clone(), &phase_ctx)?;
    }
    let started = Instant::now();
    let outcome = async {
        let load = load(format!("http://{addr}/track/batch"), bodies, args, ctx).await?;
        wait_total(store, before + args.events as i64, started + args.timeout).await?;
        Ok::<_, Error>(load)
    }
    .await;
    let elapsed = started.elapsed();
    phase_ctx.drain(Duration::from_secs(10)).await;
    let load = outcome?;
    Ok(row(mode, phase, workers, args.events, elapsed, &load))
}

/// Times a worker folding the backlog the collector-only phase left in the journal.
async fn drain_backlog(
    args: &BenchArgs,
    mode: &'static str,
    bus: &Bus,
    store: &Store,
) -> Result<Row> {
    let phase_ctx = Ctx::new();
    let before = report::total(store).await?;
    let started = Instant::now();
    let worker = WorkerArgs::with_idle_poll(Duration::from_millis(2));
    role::start_worker(&worker, bus.clone(), store.clone(), &phase_ctx)?;
    let target = before + args.events as i64;
    let outcome = wait_total(store, target, started + args.timeout).await;
    let elapsed = started.elapsed();
    phase_ctx.drain(Duration::from_secs(10)).await;
    outcome?;
    let none = Load { elapsed, latencies: Vec::new(), shed: 0 };
    Ok(row(mode, "worker alone: fold the backlog", 1, args.events, elapsed, &none))
}

/// Polls the read model until it counts `target` events.
async fn wait_total(store: &Store, target: i64, deadline: Instant) -> Result<()> {
    while report::total(store).await? < target {
        if Instant::now() > deadline {
            return Err(Error::Bench("events not queryable in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Sends `args.events` events in batch requests from `args.concurrency` clients; a 503 is
/// retried after a short pause (and counted).
async fn load(url: String, bodies: &Arc<Vec<Bytes>>, args: &BenchArgs, ctx: &Ctx) -> Result<Load> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let requests = args.events / args.batch;
    let next = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + args.timeout;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url, bodies, next, shed) =
            (client.clone(), url.clone(), bodies.clone(), next.clone(), shed.clone());
        let cancel = ctx.shutdown.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok(latencies);
                }
                let body = &bodies[i % bodies.len()];
                let give_up = || Instant::now() > deadline || cancel.is_cancelled();
                match post_until_accepted(&client, &url, body, &shed, give_up).await? {
                    Some(latency) => latencies.push(latency),
                    None => return Err(Error::Bench("load did not finish in time".into())),
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    while let Some(joined) = tasks.join_next().await {
        let part = joined.map_err(|e| Error::Bench(format!("load task: {e}")))??;
        latencies.extend(part);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Load { elapsed, latencies, shed: shed.load(Ordering::Relaxed) })
}

/// Posts `body` until the collector accepts it (202), waiting 5 ms after each 503 (counted in
/// `shed`): the accepted request's latency, or `None` once `give_up()` says stop retrying.
async fn post_until_accepted(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
    shed: &AtomicU64,
    give_up: impl Fn() -> bool,
) -> Result<Option<Duration>> {
    loop {
        if give_up() {
            return Ok(None);
        }
        let sent = Instant::now();
        let res = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        match res.status().as_u16() {
            202 => return Ok(Some(sent.elapsed())),
            503 => {
                shed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => return Err(Error::Bench(format!("collector answered {other}"))),
        }
    }
}

fn row(
    mode: &'static str,
    phase: &'static str,
    workers: u16,
    events: usize,
    elapsed: Duration,
    load: &Load,
) -> Row {
    let pct = |p: f64| {
        let n = load.latencies.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        load.latencies[i].as_secs_f64() * 1000.0
    };
    let seconds = elapsed.as_secs_f64();
    Row {
        mode,
        phase,
        workers,
        events,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        shed_503: load.shed,
    }
}

fn print(args: &BenchArgs, rows: &[Row]) {
    println!(
        "tracker bench: {} events per phase, batches of {}, {} concurrent clients (latency = one batch request's 202)\n",
        args.events, args.batch, args.concurrency
    );
    println!(
        "{:<14} {:<42} {:>7} {:>10} {:>8} {:>8} {:>8} {:>6}",
        "mode", "phase", "workers", "events/s", "seconds", "p50 ms", "p99 ms", "503s"
    );
    for r in rows {
        let workers = if r.workers == 0 { "-".to_owned() } else { r.workers.to_string() };
        println!(
            "{:<14} {:<42} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>6}",
            r.mode, r.phase, workers, r.events_per_s, r.seconds, r.p50_ms, r.p99_ms, r.shed_503
        );
    }
    let line = serde_json::json!({
        "bench": "tracker",
        "events": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "results": rows,
    });
    println!("\n{line}");
}
