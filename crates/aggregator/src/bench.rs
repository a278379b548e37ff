//! `switchboard bench aggregator`: messages/s of the aggregator against a reference that
//! only reads and parses the same frames, and against the floor that only reads them, measured
//! in the same process.
//!
//! A blaster thread (its own single-threaded runtime) sends a pool of pre-built frames over a
//! loopback websocket as fast as TCP takes them, for a fixed time, then closes. The client
//! runs on another single-threaded runtime on its own OS thread, so "one core" is literal and
//! its CPU time is that thread's. Run 1 (read only) takes each frame from the websocket and
//! drops it: the cost no parser can remove. Run 2 (reference) reads each frame and
//! `serde_json`-parses it into borrowed strings. Run 3 is the aggregator's real session loop
//! (parse into 128-bit ids, resolve parents, count, close 1 s windows, send reports). Process
//! RSS is sampled every second of each run to show whether memory stays flat. The three runs
//! repeat for `--rounds`, interleaved, and the report gives medians: on a shared machine one
//! run alone can be off by ±30 %.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use switchboard_core::stats::{rss_bytes, with_progress};
use switchboard_core::{Ctx, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;
use crate::outbox::Outbox;
use crate::window::{Limits, Schedule};
use crate::wsserver::world::{Shape, World};
use crate::{Error, Result, session};

/// `switchboard bench aggregator` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How long each run sends frames.
    #[arg(long, env = "SWITCHBOARD_DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rounds of the three runs, interleaved (read only, reference, aggregator, then again);
    /// the report gives each run's median, so a noisy second on a shared machine moves one
    /// sample instead of the result.
    #[arg(long, env = "SWITCHBOARD_ROUNDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Distinct message frames in the pool the blaster cycles through.
    #[arg(long, env = "SWITCHBOARD_FRAMES", default_value_t = 4096)]
    pub frames: usize,
    /// Parent services in the simulated tree.
    #[arg(long, env = "SWITCHBOARD_PARENTS", default_value_t = 50)]
    pub parents: usize,
    /// Children per parent.
    #[arg(long, env = "SWITCHBOARD_CHILDREN_PER_PARENT", default_value_t = 20)]
    pub children_per_parent: usize,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Measured {
    messages: u64,
    wall: Duration,
    cpu: Duration,
    rss_kib: Vec<u64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn per_cpu(&self) -> f64 {
        self.messages as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadOnly,
    Reference,
    Aggregator,
}

/// Runs the rounds of three measurements and prints the table and the JSON line.
pub(crate) async fn run(args: BenchArgs, ctx: Ctx) -> Result<()> {
    let frames = Arc::new(build_frames(&args));
    let modes = [Mode::ReadOnly, Mode::Reference, Mode::Aggregator];
    let mut rounds: Vec<[Measured; 3]> = Vec::new();
    for round in 1..=args.rounds {
        let mut results = Vec::with_capacity(modes.len());
        for (run, mode) in modes.into_iter().enumerate() {
            if ctx.shutdown.is_cancelled() {
                return Err(Error::Bench("interrupted".into()));
            }
            let what = match mode {
                Mode::ReadOnly => "read only: websocket frames, no parse",
                Mode::Reference => "reference: read + parse only",
                Mode::Aggregator => "aggregator: the real session loop",
            };
            let label = format!(
                "bench aggregator: round {round} of {}, run {} of {}, {what}",
                args.rounds,
                run + 1,
                modes.len()
            );
            let measure = measure(mode, frames.clone(), args.duration);
            let measured = with_progress(&label, Some(args.duration), measure).await?;
            eprintln!(
                "  {:.0} messages/s, {:.0} per CPU-second",
                measured.rate(),
                measured.per_cpu()
            );
            results.push(measured);
        }
        let [read_only, reference, aggregator] =
            <[Measured; 3]>::try_from(results).map_err(|_| Error::Bench("lost a run".into()))?;
        rounds.push([read_only, reference, aggregator]);
    }
    print_report(&args, &rounds);
    Ok(())
}

/// The round whose `key` is the median (the lower middle one for an even count).
fn median_by(rounds: &[[Measured; 3]], key: impl Fn(&[Measured; 3]) -> f64) -> &[Measured; 3] {
    let mut order: Vec<&[Measured; 3]> = rounds.iter().collect();
    order.sort_by(|a, b| key(a).total_cmp(&key(b)));
    order[(order.len() - 1) / 2]
}

/// The association list first, then the message pool.
fn build_frames(args: &BenchArgs) -> (Utf8Bytes, Vec<Utf8Bytes>) {
    let mut world = World::new(Shape {
        parents: args.parents,
        children_per_parent: args.children_per_parent,
        unknown_ratio: 0.0,
        pad: false,
        children_key: false,
        seed: 42,
    });
    let list = world.full_list();
    let assoc = world.association_frame(&list).into();
    let pool = (0..args.frames.max(1))
        .map(|_| {
            let (s, d) = world.pick_message();
            world.message_frame(s, d).into()
        })
        .collect();
    (assoc, pool)
}

async fn measure(
    mode: Mode,
    frames: Arc<(Utf8Bytes, Vec<Utf8Bytes>)>,
    duration: Duration,
) -> Result<Measured> {
    let (addr_tx, addr_rx) = oneshot::channel();
    let (sent_tx, sent_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("bench-blaster".into())
        .spawn(move || {
            let rt = current_thread();
            let sent = rt.block_on(blast(frames, duration, addr_tx));
            let _ = sent_tx.send(sent);
        })
        .map_err(|e| Error::Bench(e.to_string()))?;
    let addr = addr_rx.await.map_err(|_| Error::Bench("blaster failed to start".into()))?;

    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            // procfs reads of this thread's CPU time happen outside the runtime.
            let cpu0 = thread_cpu();
            let rt = current_thread();
            let outcome = rt.block_on(client(mode, addr));
            let cpu = thread_cpu().saturating_sub(cpu0);
            let _ = done_tx.send(outcome.map(|(wall, rss_kib)| Measured {
                wall,
                cpu,
                rss_kib,
                messages: 0,
            }));
        })
        .map_err(|e| Error::Bench(e.to_string()))?;
    let mut m = done_rx.await.map_err(|_| Error::Bench("client thread died".into()))??;
    m.messages = sent_rx.await.map_err(|_| Error::Bench("blaster thread died".into()))??;
    Ok(m)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

/// Serves one connection: the association list, then the pool in a loop for `duration`.
async fn blast(
    frames: Arc<(Utf8Bytes, Vec<Utf8Bytes>)>,
    duration: Duration,
    addr_tx: oneshot::Sender<SocketAddr>,
) -> Result<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let _ = addr_tx.send(listener.local_addr()?);
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    let ws = tokio_tungstenite::accept_async(tcp).await.map_err(|e| Error::Bench(e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    // Reports come back on the same socket; read them so the client never blocks.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| Error::Bench(e.to_string());
    sink.send(Message::Text(frames.0.clone())).await.map_err(ws_err)?;
    let until = Instant::now() + duration;
    let mut sent = 0u64;
    'outer: loop {
        for chunk in frames.1.chunks(256) {
            for f in chunk {
                sink.feed(Message::Text(f.clone())).await.map_err(ws_err)?;
            }
            sink.flush().await.map_err(ws_err)?;
            sent += chunk.len() as u64;
            if Instant::now() >= until {
                break 'outer;
            }
        }
    }
    sink.close().await.map_err(ws_err)?;
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    Ok(sent)
}

/// Connects and consumes until the blaster closes; returns wall time and RSS samples.
async fn client(mode: Mode, addr: SocketAddr) -> Result<(Duration, Vec<u64>)> {
    let url = format!("ws://{addr}/ws");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .map_err(|e| Error::Bench(e.to_string()))?;
    let rss = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_rss(rss.clone()));
    let started = Instant::now();
    match mode {
        Mode::ReadOnly => {
            let (_sink, mut stream) = ws.split();
            let mut frames = 0u64;
            while let Some(Ok(msg)) = stream.next().await {
                frames += u64::from(matches!(std::hint::black_box(msg), Message::Text(_)));
            }
            std::hint::black_box(frames);
        }
        Mode::Reference => {
            let (_sink, mut stream) = ws.split();
            let mut parsed = 0u64;
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg {
                    parsed += u64::from(parse_only(t.as_str()));
                }
            }
            std::hint::black_box(parsed);
        }
        Mode::Aggregator => {
            let limits =
                Limits { max_children: 1_000_000, max_parents: 100_000, max_pending: 100_000 };
            let schedule = Schedule::new(Duration::from_secs(1), Arc::new(SystemClock));
            let frames = crate::protocol::FrameLimits::new(64 << 10, limits.max_children);
            let mut intake = Intake::new(limits, frames, schedule, Arc::new(Outbox::new(60)));
            let end =
                session::run(ws, &mut intake, &CancellationToken::new(), Duration::from_secs(60))
                    .await;
            tracing::debug!(?end, "bench session ended");
        }
    }
    let wall = started.elapsed();
    sampler.abort();
    let samples = rss.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((wall, samples))
}

/// The reference: websocket frame → JSON parse into borrowed fields, nothing else.
fn parse_only(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Msg<'a> {
        #[serde(borrow)]
        source: &'a str,
        #[serde(borrow)]
        destination: &'a str,
    }
    match text.trim_start().as_bytes().first() {
        Some(b'{') => serde_json::from_str::<Msg>(text)
            .is_ok_and(|m| std::hint::black_box(m.source.len() + m.destination.len()) > 0),
        Some(b'[') => serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text).is_ok(),
        _ => false,
    }
}

async fn sample_rss(out: Arc<std::sync::Mutex<Vec<u64>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // On a blocking thread: the procfs read is not the measured client thread's work.
        let rss = tokio::task::spawn_blocking(|| rss_bytes(std::process::id())).await;
        if let Ok(Some(bytes)) = rss
            && let Ok(mut v) = out.lock()
        {
            v.push(bytes / 1024);
        }
    }
}

/// CPU time (user + system) of the calling thread, from procfs (Linux; zero elsewhere).
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else { return Duration::ZERO };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    // Linux reports in USER_HZ, which is 100 on every mainstream architecture.
    Duration::from_millis(ticks * 10)
}

fn print_report(args: &BenchArgs, rounds: &[[Measured; 3]]) {
    // Per-round ratios (each round's runs ran next to each other), then the median round of
    // each quantity; the table shows each run from the round with its median rate per CPU-s.
    let ratio_cpu = |r: &[Measured; 3]| r[2].per_cpu() / r[1].per_cpu().max(1e-9);
    let ratio_wall = |r: &[Measured; 3]| r[2].rate() / r[1].rate().max(1e-9);
    let floor = |m: &Measured, r: &[Measured; 3]| m.per_cpu() / r[0].per_cpu().max(1e-9);
    let median_ratio_cpu = ratio_cpu(median_by(rounds, ratio_cpu));
    let median_ratio_wall = ratio_wall(median_by(rounds, ratio_wall));
    let reference_floor = {
        let r = median_by(rounds, |r| floor(&r[1], r));
        floor(&r[1], r)
    };
    let aggregator_floor = {
        let r = median_by(rounds, |r| floor(&r[2], r));
        floor(&r[2], r)
    };
    let run = |i: usize| &median_by(rounds, |r| r[i].per_cpu())[i];
    let (read_only, reference, aggregator) = (run(0), run(1), run(2));
    let rss = |m: &Measured| {
        let first = m.rss_kib.get(1).or(m.rss_kib.first()).copied().unwrap_or(0);
        let last = m.rss_kib.last().copied().unwrap_or(0);
        let max = m.rss_kib.iter().copied().max().unwrap_or(0);
        (first, last, max)
    };
    println!(
        "aggregator bench: {} rounds of {:?} per run, {} distinct frames, {} parents x {} children, one client thread; medians",
        rounds.len(),
        args.duration,
        args.frames,
        args.parents,
        args.children_per_parent
    );
    println!(
        "{:<11} {:>11} {:>12} {:>10} {:>13} {:>24}",
        "run", "messages", "msgs/s", "CPU s", "msgs/CPU-s", "RSS MiB 2nd s → end (max)"
    );
    for (name, m) in
        [("read only", read_only), ("reference", reference), ("aggregator", aggregator)]
    {
        let (first, last, max) = rss(m);
        println!(
            "{name:<11} {:>11} {:>12.0} {:>10.2} {:>13.0} {:>24}",
            m.messages,
            m.rate(),
            m.cpu.as_secs_f64(),
            m.per_cpu(),
            format!(
                "{:.1} → {:.1} ({:.1})",
                first as f64 / 1024.0,
                last as f64 / 1024.0,
                max as f64 / 1024.0
            )
        );
    }
    let per_round: Vec<String> =
        rounds.iter().map(|r| format!("{:.1}%", ratio_cpu(r) * 100.0)).collect();
    println!(
        "aggregator / reference: {:.1}% by wall clock, {:.1}% per CPU-second (target ≥ 100%; rounds: {})",
        median_ratio_wall * 100.0,
        median_ratio_cpu * 100.0,
        per_round.join(", ")
    );
    println!(
        "per CPU-second against read only: reference {:.1}%, aggregator {:.1}%",
        reference_floor * 100.0,
        aggregator_floor * 100.0
    );
    let (a_first, a_last, a_max) = rss(aggregator);
    let json = serde_json::json!({
        "bench": "aggregator",
        "duration_s": args.duration.as_secs_f64(),
        "rounds": rounds.len(),
        "ratio_cpu_per_round": rounds.iter().map(ratio_cpu).collect::<Vec<_>>(),
        "read_only": {"messages": read_only.messages, "msgs_per_s": read_only.rate(), "cpu_s": read_only.cpu.as_secs_f64(), "msgs_per_cpu_s": read_only.per_cpu()},
        "reference": {"messages": reference.messages, "msgs_per_s": reference.rate(), "cpu_s": reference.cpu.as_secs_f64(), "msgs_per_cpu_s": reference.per_cpu()},
        "aggregator": {"messages": aggregator.messages, "msgs_per_s": aggregator.rate(), "cpu_s": aggregator.cpu.as_secs_f64(), "msgs_per_cpu_s": aggregator.per_cpu(),
            "rss_kib_second_s": a_first, "rss_kib_end": a_last, "rss_kib_max": a_max},
        "ratio_wall": median_ratio_wall,
        "ratio_cpu": median_ratio_cpu,
        "reference_vs_read_only_cpu": reference_floor,
        "aggregator_vs_read_only_cpu": aggregator_floor,
        "target": 1.0,
    });
    println!("{json}");
}
