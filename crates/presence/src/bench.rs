//! `switchboard bench presence`: how many clients one gateway holds and at what cost, against a
//! plain tonic bidi-stream server measured in the same run; then the status ingest rate.
//!
//! The gateway (ours, then the reference) runs as its own child process so its RSS and CPU can
//! be read from `/proc`; simulated clients run in further child processes, at most
//! `--clients-per-proc` each (a process here may open at most 20,000 files). Each load point of
//! `--clients` is a run of both servers, so the curve is visible, not one saturated point. Clients record the interval between consecutive Pings
//! after a warm-up; jitter is |interval − 1 s|.
mod ingest;
mod reference;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_core::Ctx;
use switchboard_core::stats::{PROGRESS_EVERY, with_progress};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::{Error, Result};

/// `switchboard bench presence` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Load points: simulated clients against each gateway, one run per value (≤ 18,000 with
    /// one connection each: a gateway process here may open at most 20,000 files).
    #[arg(long, env = "SWITCHBOARD_CLIENTS", value_delimiter = ',', default_value = "6000,18000")]
    pub clients: Vec<usize>,
    /// Most clients per load-generator process.
    #[arg(long, env = "SWITCHBOARD_CLIENTS_PER_PROC", default_value_t = 6_000)]
    pub clients_per_proc: usize,
    /// Clients sharing one HTTP/2 connection (1: one each, as devices; more: as behind an L7
    /// gRPC proxy).
    #[arg(long, env = "SWITCHBOARD_STREAMS_PER_CONNECTION", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_connection: u32,
    /// Steady-state measurement once every client is connected.
    #[arg(long, env = "SWITCHBOARD_MEASURE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub measure: Duration,
    /// Skip the plain-tonic reference run.
    #[arg(long, env = "SWITCHBOARD_NO_REFERENCE")]
    pub no_reference: bool,
    /// Reports for the status ingest measurement (0 skips it).
    #[arg(long, env = "SWITCHBOARD_REPORTS", default_value_t = 2_000_000)]
    pub reports: usize,
    /// Distinct users among those reports.
    #[arg(long, env = "SWITCHBOARD_USERS", default_value_t = 1_000_000)]
    pub users: usize,
    /// Internal: serve the plain reference gateway here (the bench starts itself with it).
    #[arg(long, env = "SWITCHBOARD_SERVE_REFERENCE", hide = true)]
    pub serve_reference: Option<SocketAddr>,
}

/// One gateway under load.
#[derive(Debug, Clone, Default)]
struct GatewayRun {
    held: u64,
    ramp_secs: f64,
    kb_per_client: f64,
    cpu_pct_per_1k: f64,
    jitter_p50_ms: u64,
    jitter_p99_ms: u64,
    jitter_max_ms: u64,
    samples: u64,
}

/// Runs the benchmark and prints a table and one JSON line.
///
/// # Errors
/// A child process fails to start or the gateway never holds the clients.
pub async fn run(args: BenchArgs, ctx: Ctx) -> Result<()> {
    if let Some(addr) = args.serve_reference {
        return reference::serve(addr, ctx).await;
    }
    if args.clients.is_empty() || args.clients.contains(&0) || args.clients_per_proc == 0 {
        return Err(Error::config("--clients and --clients-per-proc must be > 0"));
    }
    let mut points = Vec::new();
    for &clients in &args.clients {
        let point = LoadPoint { clients, procs: clients.div_ceil(args.clients_per_proc) };
        eprintln!(
            "presence bench: {clients} clients over {} processes, {} per connection, {:?} steady state",
            point.procs, args.streams_per_connection, args.measure
        );
        let ours = gateway_run(&args, point, false, &ctx).await?;
        let plain = if args.no_reference {
            None
        } else {
            Some(gateway_run(&args, point, true, &ctx).await?)
        };
        points.push((point, ours, plain));
    }
    let ingest = if args.reports > 0 {
        let what = format!("status ingest: {} reports from {} users", args.reports, args.users);
        Some(with_progress(&what, None, ingest::run(args.reports, args.users)).await?)
    } else {
        None
    };
    for (point, ours, plain) in &points {
        print_point(&args, *point, ours, plain.as_ref());
    }
    print_ingest(ingest.as_ref());
    print_json(&points, ingest.as_ref());
    Ok(())
}

/// One load point: how many clients, over how many load processes.
#[derive(Debug, Clone, Copy)]
struct LoadPoint {
    clients: usize,
    procs: usize,
}

async fn gateway_run(
    args: &BenchArgs,
    point: LoadPoint,
    plain: bool,
    ctx: &Ctx,
) -> Result<GatewayRun> {
    let exe = std::env::current_exe()?;
    let (port, admin) = (free_port()?, free_port()?);
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Command::new(&exe);
    gw.args(["--admin-addr", &format!("127.0.0.1:{admin}")]);
    if plain {
        gw.args(["bench", "presence", "--serve-reference", &listen]);
    } else {
        gw.args(["presence", "gateway", "--listen", &listen]);
    }
    let server = if plain { "plain tonic" } else { "gateway" };
    eprintln!("{server} run: starting the server and {} clients", point.clients);
    let gw = spawn(gw)?;
    let pid = gw.id().ok_or_else(|| Error::Bench("gateway exited at once".into()))?;
    wait_listening(&listen, Duration::from_secs(15)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_base = switchboard_core::stats::rss_bytes(pid).unwrap_or(0);

    let per_proc = point.clients.div_ceil(point.procs);
    let ramp_per_proc = 3_000 / point.procs.max(1);
    let warmup = Duration::from_secs((per_proc / ramp_per_proc.max(1)) as u64 + 8);
    let mut loaders = Vec::new();
    let mut left = point.clients;
    for _ in 0..point.procs {
        let n = per_proc.min(left);
        left -= n;
        let mut c = Command::new(&exe);
        c.args([
            "presence",
            "clients",
            "--count",
            &n.to_string(),
            "--gateway",
            &format!("http://{listen}"),
        ])
        .args([
            "--ramp",
            &ramp_per_proc.to_string(),
            "--stats-json",
            "--warmup",
            &format!("{}s", warmup.as_secs()),
            "--streams-per-connection",
            &args.streams_per_connection.to_string(),
        ]);
        loaders.push(spawn(c)?);
    }

    let started = Instant::now();
    let target = point.clients as f64;
    let mut reported = Instant::now();
    let held = loop {
        let n = sessions(admin).await;
        if n >= target
            || started.elapsed() > Duration::from_secs(180)
            || ctx.shutdown.is_cancelled()
        {
            break n;
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            eprintln!("  {server} run: {n} of {target} clients connected");
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let ramp_secs = started.elapsed().as_secs_f64();
    eprintln!("  {server} run: {held} clients connected in {ramp_secs:.1} s");
    // Settle, and let the clients' warm-up pass, before measuring.
    let settle = warmup.saturating_sub(started.elapsed()).max(Duration::from_secs(3));
    let what = format!("  {server} run: settling");
    with_progress(&what, Some(settle), tokio::time::sleep(settle)).await;
    let rss_loaded = switchboard_core::stats::rss_bytes(pid).unwrap_or(0);
    let cpu0 = switchboard_core::stats::cpu_time(pid).unwrap_or_default();
    let t0 = Instant::now();
    let what = format!("  {server} run: measuring");
    with_progress(&what, Some(args.measure), tokio::time::sleep(args.measure)).await;
    let cpu = switchboard_core::stats::cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let cpu_pct = cpu.as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let held_end = sessions(admin).await.min(held);

    let mut run = GatewayRun {
        held: held_end as u64,
        ramp_secs,
        kb_per_client: rss_loaded.saturating_sub(rss_base) as f64 / 1024.0 / held_end.max(1.0),
        cpu_pct_per_1k: cpu_pct / (held_end.max(1.0) / 1000.0),
        ..GatewayRun::default()
    };
    for child in loaders {
        let out = stop(child).await;
        let line = out.lines().rev().find(|l| l.contains("jitter_p99_ms")).unwrap_or_default();
        run.samples += json_u64(line, "samples");
        run.jitter_p50_ms = run.jitter_p50_ms.max(json_u64(line, "jitter_p50_ms"));
        run.jitter_p99_ms = run.jitter_p99_ms.max(json_u64(line, "jitter_p99_ms"));
        run.jitter_max_ms = run.jitter_max_ms.max(json_u64(line, "jitter_max_ms"));
    }
    stop(gw).await;
    tracing::info!(server, ?run, "gateway run done");
    Ok(run)
}

fn print_point(args: &BenchArgs, point: LoadPoint, ours: &GatewayRun, plain: Option<&GatewayRun>) {
    let p = plain.cloned().unwrap_or_default();
    let row = |name: &str, a: String, b: String| println!("{name:<34} {a:>12} {b:>14}");
    println!(
        "\npresence bench — {} clients, {} load processes, {} per connection, {:?} steady state",
        point.clients, point.procs, args.streams_per_connection, args.measure
    );
    row("", "gateway".into(), "plain tonic".into());
    row("clients held", ours.held.to_string(), p.held.to_string());
    row(
        "ramp-up to all connected (s)",
        format!("{:.1}", ours.ramp_secs),
        format!("{:.1}", p.ramp_secs),
    );
    row(
        "RSS per client (KB)",
        format!("{:.1}", ours.kb_per_client),
        format!("{:.1}", p.kb_per_client),
    );
    row(
        "CPU per 1k clients (% of a core)",
        format!("{:.2}", ours.cpu_pct_per_1k),
        format!("{:.2}", p.cpu_pct_per_1k),
    );
    row("ping jitter p50 (ms)", ours.jitter_p50_ms.to_string(), p.jitter_p50_ms.to_string());
    row("ping jitter p99 (ms)", ours.jitter_p99_ms.to_string(), p.jitter_p99_ms.to_string());
    row("ping jitter max (ms)", ours.jitter_max_ms.to_string(), p.jitter_max_ms.to_string());
    row("ping intervals measured", ours.samples.to_string(), p.samples.to_string());
}

fn print_ingest(ingest: Option<&ingest::IngestResult>) {
    if let Some(i) = ingest {
        println!(
            "\nstatus ingest: {} reports from {} users in {:.2} s = {:.0} reports/s (target 200,000)",
            i.reports,
            i.users,
            i.secs,
            i.rate()
        );
        println!(
            "count query at {} users: {:.1} µs (per-second buckets) vs {:.1} ms (naive scan)",
            i.users,
            i.query_ns / 1e3,
            i.naive_query_ns / 1e6
        );
    }
}

fn print_json(
    points: &[(LoadPoint, GatewayRun, Option<GatewayRun>)],
    ingest: Option<&ingest::IngestResult>,
) {
    let points = points
        .iter()
        .map(|(point, ours, plain)| {
            format!(
                "{{\"clients\":{},\"procs\":{},\"gateway\":{},\"plain_tonic\":{}}}",
                point.clients,
                point.procs,
                run_json(ours),
                plain.as_ref().map_or_else(|| "null".to_owned(), run_json),
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let i = ingest.copied();
    println!(
        "{{\"bench\":\"presence\",\"points\":[{points}],\"status_reports_per_s\":{:.0},\"status_query_us\":{:.2},\"naive_query_ms\":{:.2}}}",
        i.map_or(0.0, |i| i.rate()),
        i.map_or(0.0, |i| i.query_ns / 1e3),
        i.map_or(0.0, |i| i.naive_query_ns / 1e6),
    );
}

fn run_json(r: &GatewayRun) -> String {
    format!(
        "{{\"held\":{},\"ramp_s\":{:.1},\"rss_kb_per_client\":{:.2},\"cpu_pct_per_1k\":{:.3},\"jitter_p50_ms\":{},\"jitter_p99_ms\":{},\"jitter_max_ms\":{},\"samples\":{}}}",
        r.held,
        r.ramp_secs,
        r.kb_per_client,
        r.cpu_pct_per_1k,
        r.jitter_p50_ms,
        r.jitter_p99_ms,
        r.jitter_max_ms,
        r.samples
    )
}

/// The number after `"key":` in a flat JSON line (0 if absent).
fn json_u64(line: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    line.find(&pat)
        .map(|i| &line[i + pat.len()..])
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

fn spawn(mut cmd: Command) -> Result<Child> {
    // Errors only: the children's warnings about their own setup (a gateway on the memory
    // bus) would read as if the bench had gone wrong.
    cmd.env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

/// SIGTERM, wait (then SIGKILL after 15 s), and return what it printed on stdout.
async fn stop(mut child: Child) -> String {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stdout.read_to_string(&mut out)).await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    out
}

async fn wait_listening(addr: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(Error::Bench(format!("nothing listens on {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `presence_gateway_sessions` gauge from a child's admin `/metrics` (0 if unreachable).
async fn sessions(admin: u16) -> f64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await else { return 0.0 };
    if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return 0.0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .find_map(|l| l.strip_prefix("presence_gateway_sessions ")?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_from_the_clients_stats_line() {
        let line = r#"{"clients":6000,"samples":120000,"jitter_p50_ms":3,"jitter_p99_ms":41,"jitter_max_ms":90}"#;
        assert_eq!(json_u64(line, "samples"), 120_000);
        assert_eq!(json_u64(line, "jitter_p99_ms"), 41);
        assert_eq!(json_u64(line, "absent"), 0);
    }
}
