//! `switchboard bench jobproxy`: how close the proxy gets to the job server's own limit.
//!
//! 1. Reference, same run: one job straight to the simulator with `wait:true` (the limit).
//! 2. The jobclient's burst: 50 held jobs on one account through the proxy, a few rounds.
//! 3. 10,000 requests held at once (job time raised so all are held together), over 100
//!    accounts: added latency over the job time (p50/p99) and where the proxy spent it,
//!    CPU per request, resident memory per held request, and whether anything leaked (held
//!    gauge back to 0, file descriptors back to baseline). Then the reference for latency and
//!    CPU: the same 10,000 connections and jobs straight to a job server process of their own.
//!
//! 4. With `--bench-nats`: the same bursts through three proxy nodes on that NATS server behind
//!    one round-robin address (callbacks forwarded between nodes), next to the single node.
//!
//! The proxy runs as a child process (this binary) so `/proc` shows its memory and CPU alone;
//! the load generator runs in this process, and so does the simulator of the bursts, while the
//! held phase and its reference each get a job server process of their own.
use std::time::{Duration, Instant};

use switchboard_core::stats::quantile;
use switchboard_core::{CancellationToken, Ctx};

use crate::jobserver::{JobServer, JobServerArgs};
use crate::{Error, Result, jobclient};

mod child;
mod load;
mod nodes;

use child::RoleProcess;

/// `switchboard bench jobproxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Jobs per burst (the jobclient sends 50).
    #[arg(long, env = "SWITCHBOARD_JOBS", default_value_t = 50)]
    pub jobs: usize,

    /// Bursts to run; the best and the median are reported.
    #[arg(long, env = "SWITCHBOARD_ROUNDS", default_value_t = 3)]
    pub rounds: usize,

    /// Job time of the simulator during the bursts.
    #[arg(long, env = "SWITCHBOARD_JOB_TIME", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub job_time: Duration,

    /// Requests held at once in the second phase.
    #[arg(long, env = "SWITCHBOARD_HELD", default_value_t = 10_000)]
    pub held: usize,

    /// Accounts the held requests are spread over.
    #[arg(long, env = "SWITCHBOARD_ACCOUNTS", default_value_t = 100)]
    pub accounts: usize,

    /// Job time during the held phase: long enough for every request to be held at once.
    #[arg(long, env = "SWITCHBOARD_HOLD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hold: Duration,

    /// Client connections being set up at once (keeps the listen backlog from overflowing).
    #[arg(long, env = "SWITCHBOARD_CONNECTING", default_value_t = 256)]
    pub connecting: usize,

    /// Also run the bursts through several proxy nodes joined on this NATS server (use a
    /// throw-away one) behind one round-robin address.
    #[arg(long, env = "SWITCHBOARD_BENCH_NATS")]
    pub bench_nats: Option<String>,

    /// Proxy nodes in the multi-node phase.
    #[arg(long, env = "SWITCHBOARD_NODES", default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub nodes: u16,
}

/// Latency over the job time as the load saw it.
#[derive(Debug, Default, Clone, Copy)]
struct Added {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Added {
    fn over(mut latencies: Vec<Duration>, job_time: Duration) -> Self {
        latencies.sort();
        let added: Vec<Duration> = latencies.iter().map(|l| l.saturating_sub(job_time)).collect();
        Self {
            p50: quantile(&added, 0.5),
            p99: quantile(&added, 0.99),
            max: added.last().copied().unwrap_or_default(),
        }
    }
}

/// The proxy's own view of the held phase, from its `/metrics` summaries (p50, p99).
#[derive(Debug, Default)]
struct Split {
    /// Waiting behind the account's earlier starts (`jobproxy_upstream_queue_seconds`).
    queue: (Duration, Duration),
    /// The start round trip to the job server (`jobproxy_upstream_start_seconds`).
    start: (Duration, Duration),
    /// Start to report inside the proxy, minus the job time (`jobproxy_held_seconds`).
    held: (Duration, Duration),
    /// The job server's job end to its callback answered (`jobserver_callback_seconds`).
    callback: (Duration, Duration),
}

#[derive(Debug, Default)]
struct Report {
    reference: Duration,
    bursts: Vec<Duration>,
    burst_failures: usize,
    peak_held: u64,
    added: Added,
    held_failures: usize,
    /// The same load straight to a job server of its own (one account per request).
    direct: Added,
    direct_failures: usize,
    /// CPU time over the held phase of the proxy, its job server and the load (this process).
    cpu: [Duration; 3],
    /// CPU time over the reference of its job server and the load.
    cpu_direct: [Duration; 2],
    first_failure: Option<String>,
    /// Where the proxy itself spent the held requests' time (p50, p99; summaries over the run).
    split: Split,
    rss_base: u64,
    rss_peak: u64,
    rss_max: u64,
    fds_before: usize,
    fds_after: usize,
    held_after: u64,
    nodes: Option<nodes::NodesReport>,
}

/// Runs the benchmark and prints the table and the JSON line.
///
/// # Errors
/// A component cannot start or a phase cannot be measured.
pub(crate) async fn run(args: BenchArgs, ctx: Ctx) -> Result<()> {
    if let Some(nats) = &args.bench_nats {
        // Before the long single-node phases: a wrong URL is said at once.
        switchboard_bus::Bus::connect(nats).await?;
    }
    let sim_ctx = ctx.child();
    let server = JobServer::start(JobServerArgs::loopback(args.job_time), &sim_ctx).await?;
    let proxy = RoleProcess::proxy(&format!("http://{}", server.addr()), args.held + 1_000).await?;
    tracing::info!(pid = proxy.pid(), "proxy under test started");
    let result = tokio::select! {
        r = measure(&args, &server, &proxy) => r,
        () = ctx.shutdown.cancelled() => Err(Error::Bench("interrupted".into())),
    };
    proxy.stop().await;
    let mut report = result?;
    if let Some(nats) = &args.bench_nats {
        server.set_job_time(args.job_time);
        let upstream = format!("http://{}", server.addr());
        let phase = nodes::run(&upstream, nats, args.nodes.into(), args.jobs, args.rounds);
        report.nodes = Some(tokio::select! {
            r = phase => r?,
            () = ctx.shutdown.cancelled() => return Err(Error::Bench("interrupted".into())),
        });
    }
    sim_ctx.shutdown.cancel();
    print(&args, &report);
    Ok(())
}

async fn measure(args: &BenchArgs, server: &JobServer, proxy: &RoleProcess) -> Result<Report> {
    let mut r = Report { reference: reference(server).await?, ..Report::default() };
    let url = format!("http://{}/", proxy.addr);
    for _ in 0..args.rounds.max(1) {
        let round =
            jobclient::fire(&url, "burst", args.jobs, Duration::from_secs(5), || {}).await?;
        r.burst_failures += round.jobs - round.succeeded;
        r.bursts.push(round.total);
    }
    r.bursts.sort();
    held(args, &mut r).await?;
    Ok(r)
}

/// The held phase on a proxy and a job server of its own, each its own process: the load
/// generator (this process) would otherwise share its runtime with the simulator and slow its
/// starts and callbacks down, which the latency would then blame on the proxy.
async fn held(args: &BenchArgs, r: &mut Report) -> Result<()> {
    let server = RoleProcess::jobserver(args.hold).await?;
    let proxy = RoleProcess::proxy(&format!("http://{}", server.addr), args.held + 1_000).await?;
    tracing::info!(pid = proxy.pid(), "proxy of the held phase started");
    r.rss_base = proxy.rss().await?;
    r.fds_before = proxy.fds().await?;
    let here = std::process::id();
    let cpu = |pid| switchboard_core::stats::cpu_time(pid).unwrap_or_default();
    let cpu0 = [proxy.cpu(), server.cpu(), cpu(here)];
    let done = CancellationToken::new();
    let load = async {
        let out = load::hold(proxy.addr, "/", args.held, args.accounts, args.connecting).await;
        done.cancel();
        out
    };
    // RSS is read while the held count is at its peak (every request held, none answered
    // yet): that is the memory held requests cost. The maximum over the run is kept too; it
    // also has the allocator's not-yet-returned pages from the start and callback bursts.
    let sample = async {
        let (mut held, mut at_peak, mut max) = (0, 0, 0);
        while !done.is_cancelled() {
            let (h, rss) = (proxy.held().await?, proxy.rss().await?);
            if h > held {
                (held, at_peak) = (h, rss);
            } else if h == held {
                at_peak = at_peak.max(rss);
            }
            max = max.max(rss);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = done.cancelled() => {}
            }
        }
        Ok::<_, Error>((held, at_peak, max))
    };
    let (outcome, sampled) = tokio::join!(load, sample);
    r.cpu = [proxy.cpu() - cpu0[0], server.cpu() - cpu0[1], cpu(here) - cpu0[2]];
    (r.peak_held, r.rss_peak, r.rss_max) = sampled?;
    r.added = Added::over(outcome.latencies, args.hold);
    r.held_failures = outcome.failures;
    r.first_failure = outcome.first_failure;
    r.split = split(&proxy, &server, args.hold).await?;

    // Leak check: the gauge must return to 0 and the sockets must be closed again (idle
    // upstream links close after their idle time, so allow a few seconds).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        r.held_after = proxy.held().await?;
        r.fds_after = proxy.fds().await?;
        if (r.held_after == 0 && r.fds_after <= r.fds_before) || Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
    server.stop().await;

    // The reference: the same connections and jobs with no proxy in between. The job server
    // serves one connection per account at a time, so every request gets its own account.
    let direct = RoleProcess::jobserver(args.hold).await?;
    let cpu0 = [direct.cpu(), cpu(here)];
    let out = load::hold(direct.addr, "/start", args.held, args.held, args.connecting).await;
    r.cpu_direct = [direct.cpu() - cpu0[0], cpu(here) - cpu0[1]];
    direct.stop().await;
    r.direct = Added::over(out.latencies, args.hold);
    r.direct_failures = out.failures;
    Ok(())
}

/// The proxy's and the job server's summaries of the held phase (each page read once).
async fn split(proxy: &RoleProcess, server: &RoleProcess, hold: Duration) -> Result<Split> {
    let (proxy, server) = (proxy.metrics_text().await?, server.metrics_text().await?);
    let pair = |page: &str, name: &str, minus: Duration| {
        let q = |q| {
            let s = child::quantile_in(page, name, q).unwrap_or_default();
            Duration::from_secs_f64(s.max(0.0)).saturating_sub(minus)
        };
        (q("0.5"), q("0.99"))
    };
    Ok(Split {
        queue: pair(&proxy, "jobproxy_upstream_queue_seconds", Duration::ZERO),
        start: pair(&proxy, "jobproxy_upstream_start_seconds", Duration::ZERO),
        held: pair(&proxy, "jobproxy_held_seconds", hold),
        callback: pair(&server, "jobserver_callback_seconds", Duration::ZERO),
    })
}

/// One job straight to the simulator, synchronously: the job server's own limit.
async fn reference(server: &JobServer) -> Result<Duration> {
    let client = reqwest::Client::new();
    let began = Instant::now();
    let res = client
        .post(format!("http://{}/start", server.addr()))
        .header(reqwest::header::CONNECTION, "close")
        .json(&serde_json::json!({ "account": "reference", "wait": true }))
        .send()
        .await?;
    let status = res.status();
    res.bytes().await?;
    if !status.is_success() {
        return Err(Error::Bench(format!("reference job failed: HTTP {status}")));
    }
    Ok(began.elapsed())
}

fn print(args: &BenchArgs, r: &Report) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let best = r.bursts.first().copied().unwrap_or_default();
    let median = r.bursts.get(r.bursts.len() / 2).copied().unwrap_or_default();
    let per_held = r.rss_peak.saturating_sub(r.rss_base).checked_div(r.peak_held).unwrap_or(0);
    let leaked = r.held_after != 0 || r.fds_after > r.fds_before;
    println!("jobproxy benchmark (proxy and held-phase job server in processes of their own)");
    println!("{:<48} {:>12}", "phase", "result");
    println!("{:<48} {:>10.1} ms", "reference: 1 job straight to the job server", ms(r.reference));
    println!(
        "{:<48} {:>10.1} ms",
        format!("{} jobs via the proxy, best of {}", args.jobs, r.bursts.len()),
        ms(best)
    );
    println!("{:<48} {:>10.1} ms", format!("{} jobs via the proxy, median", args.jobs), ms(median));
    println!("{:<48} {:>12}", "  failed jobs in the bursts", r.burst_failures);
    println!(
        "{:<48} {:>10.1} ms",
        format!("  same jobs on one sync connection (n × ref)"),
        ms(r.reference) * args.jobs as f64
    );
    println!(
        "{:<48} {:>12}",
        format!("held at once (asked {}, {} accounts)", args.held, args.accounts),
        r.peak_held
    );
    let added = |label: &str, a: &Added| {
        let (p50, p99, max) = (ms(a.p50), ms(a.p99), ms(a.max));
        println!(
            "{:<48} {p50:>4.1} / {p99:.1} / {max:.1} ms",
            format!("  {label}, p50 / p99 / max")
        );
    };
    added("added latency over the job time", &r.added);
    let split = |label: &str, (p50, p99): (Duration, Duration)| {
        println!("{:<48} {:>4.1} / {:.1} ms", format!("    {label}, p50 / p99"), ms(p50), ms(p99));
    };
    println!("  of which inside the proxy:");
    split("start to report, minus the job time", r.split.held);
    split("queued behind the account's starts", r.split.queue);
    split("start round trip to the job server", r.split.start);
    println!("  in the job server:");
    split("job end to its callback answered", r.split.callback);
    let per_1k = |cpu: Duration| ms(cpu) * 1_000.0 / args.held.max(1) as f64;
    let cpu = |label: &str, cpu: Duration| {
        println!("{:<48} {:>7.1} ms", format!("  CPU per 1,000 requests, {label}"), per_1k(cpu));
    };
    println!("{:<48} {:>12}", "  failed held requests", r.held_failures);
    cpu("proxy", r.cpu[0]);
    cpu("job server", r.cpu[1]);
    cpu("load", r.cpu[2]);
    println!("reference: the same load straight to a job server (an account per request):");
    added("added latency over the job time", &r.direct);
    println!("{:<48} {:>12}", "  failed requests", r.direct_failures);
    cpu("job server", r.cpu_direct[0]);
    cpu("load", r.cpu_direct[1]);
    println!(
        "{:<48} {:>6.1} → {:.1} MiB",
        "  proxy RSS, baseline → all held",
        mib(r.rss_base),
        mib(r.rss_peak)
    );
    println!("{:<48} {:>8.1} MiB", "  proxy RSS, maximum over the phase", mib(r.rss_max));
    println!("{:<48} {:>9} B", "  RSS per held request (target ≤ 4 KiB)", per_held);
    println!("{:<48} {:>5} → {}", "  proxy fds, before → after", r.fds_before, r.fds_after);
    println!(
        "{:<48} {:>12}",
        "  leaked (held gauge ≠ 0 or fds above baseline)",
        if leaked { "YES" } else { "no" }
    );
    if let Some(n) = &r.nodes {
        let best = n.bursts.first().copied().unwrap_or_default();
        let median = n.bursts.get(n.bursts.len() / 2).copied().unwrap_or_default();
        let via = format!("{} jobs via {} nodes behind one address", args.jobs, n.nodes);
        println!("{:<48} {:>10.1} ms", format!("{via}, best"), ms(best));
        println!("{:<48} {:>10.1} ms", format!("{via}, median"), ms(median));
        println!("{:<48} {:>12}", "  failed jobs", n.failures);
        println!("{:<48} {:>12}", "  callbacks forwarded between nodes", n.forwarded);
    }
    if let Some(why) = &r.first_failure {
        println!("first failure: {why}");
    }
    let nodes = r.nodes.as_ref().map(|n| {
        serde_json::json!({
            "nodes": n.nodes,
            "burst_best_ms": n.bursts.first().map(|d| ms(*d)),
            "burst_median_ms": n.bursts.get(n.bursts.len() / 2).map(|d| ms(*d)),
            "failures": n.failures,
            "forwarded": n.forwarded,
        })
    });
    let json = serde_json::json!({
        "bench": "jobproxy",
        "reference_job_ms": ms(r.reference),
        "jobs": args.jobs,
        "burst_best_ms": ms(best),
        "burst_median_ms": ms(median),
        "burst_failures": r.burst_failures,
        "held_asked": args.held,
        "held_peak": r.peak_held,
        "accounts": args.accounts,
        "added_p50_ms": ms(r.added.p50),
        "added_p99_ms": ms(r.added.p99),
        "added_max_ms": ms(r.added.max),
        "direct_added_p50_ms": ms(r.direct.p50),
        "direct_added_p99_ms": ms(r.direct.p99),
        "direct_added_max_ms": ms(r.direct.max),
        "direct_failures": r.direct_failures,
        "cpu_ms_per_1k_proxy": per_1k(r.cpu[0]),
        "cpu_ms_per_1k_jobserver": per_1k(r.cpu[1]),
        "cpu_ms_per_1k_load": per_1k(r.cpu[2]),
        "cpu_ms_per_1k_direct_jobserver": per_1k(r.cpu_direct[0]),
        "cpu_ms_per_1k_direct_load": per_1k(r.cpu_direct[1]),
        "held_failures": r.held_failures,
        "proxy_added_p50_ms": ms(r.split.held.0),
        "proxy_added_p99_ms": ms(r.split.held.1),
        "queue_p50_ms": ms(r.split.queue.0),
        "queue_p99_ms": ms(r.split.queue.1),
        "start_p50_ms": ms(r.split.start.0),
        "start_p99_ms": ms(r.split.start.1),
        "callback_p50_ms": ms(r.split.callback.0),
        "callback_p99_ms": ms(r.split.callback.1),
        "rss_base_bytes": r.rss_base,
        "rss_peak_bytes": r.rss_peak,
        "rss_max_bytes": r.rss_max,
        "rss_per_held_bytes": per_held,
        "fds_before": r.fds_before,
        "fds_after": r.fds_after,
        "leaked": leaked,
        "multi_node": nodes,
    });
    println!("{json}");
}
