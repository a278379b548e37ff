//! `switchboard` — wiring only: parse flags, start telemetry and the admin server, run the
//! chosen target, wait for a signal, drain, exit.
//!
//! Exit codes: 0 success, 1 runtime failure (a failed check such as jobclient, or a role that
//! did not stop within `--grace`), 64 bad configuration, 130 a second signal cut the drain short
//! or a signal stopped a benchmark (no result).
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod usage;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use cli::{Bench, Cli, Command, Sim};
use switchboard_core::{Ctx, admin, config, telemetry};

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// BSD `EX_USAGE`: the command line or configuration is invalid.
const EXIT_CONFIG: u8 = 64;
/// 128 + SIGINT: a second signal cut the drain short, or a signal stopped a benchmark.
const EXIT_INTERRUPTED: u8 = 130;
/// How long an interrupted benchmark's leftovers get before the process exits.
const BENCH_STOP: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let env = |k: &str| std::env::var_os(k);
    let typed: Vec<OsString> = std::env::args_os().collect();
    let args = match config::expand_args(typed.clone(), env) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", switchboard_core::describe_error(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            let file = config::file_path(&typed, env);
            let sources = usage::Sources {
                typed: &typed,
                from_file: &args[typed.len()..],
                file: file.as_deref(),
                env,
            };
            for note in usage::notes(&e, &sources) {
                eprintln!("note: {note}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Command::Probe(probe) = &cli.command {
        // No telemetry and no admin server of its own: it runs beside the process it probes,
        // whose admin address it shares (`SWITCHBOARD_ADMIN_ADDR`).
        if cli.admin_tls.is_set() {
            // The probe is for container health checks, which keep the admin port private.
            eprintln!(
                "error: probe speaks plain HTTP and the admin server has TLS (--admin-tls-cert); \
                 query it with an HTTPS client, e.g. curl --cacert"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        return run_probe(cli.admin_addr, probe);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A blocking read of stdin (the console in a container: stdin open, nothing typed) cannot
    // be cancelled; dropping the runtime would wait for it for ever. Everything that matters
    // has drained within --grace by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let message = switchboard_core::describe_error(e.as_ref());
            tracing::error!(error = %message, "exiting after error");
            eprintln!("error: {message}");
            if is_config_error(&e) { ExitCode::from(EXIT_CONFIG) } else { ExitCode::FAILURE }
        }
    }
}

fn run_probe(addr: std::net::SocketAddr, args: &cli::ProbeArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(switchboard_core::Error::from)
        .and_then(|rt| rt.block_on(admin::probe(addr, &args.path, args.timeout)));
    match outcome {
        Ok((status, body)) => {
            print!("{body}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: GET {} on {addr} answered {status}", args.path);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: GET {} on {addr}: {e}", args.path);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bench = is_bench(&cli.command);
    let default_filter = if bench { "warn" } else { "info" };
    let telemetry = telemetry::init("switchboard", cli.log_format, default_filter)?;
    let ctx = Ctx::new();

    // The admin server lives on its own token so it keeps answering /readyz (503) while the
    // roles drain; it stops last.
    let admin_token = tokio_util_token();
    let admin_tls = cli.admin_tls.server_config().context("admin server TLS")?;
    let scheme = if admin_tls.is_some() { "https" } else { "http" };
    let (listener, admin_addr) =
        admin::bind(cli.admin_addr).await.context("starting the admin server")?;
    tracing::info!(url = %format!("{scheme}://{admin_addr}/metrics"), "admin server listening");
    // The web console rides on the admin server and stops with it, so it shows the drain.
    let console = switchboard_console::router(console_options(), admin_token.clone());
    let admin = tokio::spawn(admin::serve(
        listener,
        admin::router(ctx.health.clone()).merge(console),
        admin_tls,
        admin_token.clone(),
    ));

    // First signal: cancel and drain. Second signal: the operator means it — exit at once.
    let signal_ctx = ctx.clone();
    tokio::spawn(async move {
        switchboard_core::shutdown::signal().await;
        signal_ctx.begin_shutdown();
        switchboard_core::shutdown::signal().await;
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(EXIT_INTERRUPTED.into());
    });

    // The grace period bounds the whole stop: the role's own drain plus its spawned tasks,
    // counted from the moment shutdown began.
    let grace = cli.grace;
    let stop_began = Arc::new(OnceLock::new());
    let deadline = {
        let stop_began = Arc::clone(&stop_began);
        let token = ctx.shutdown.clone();
        async move {
            token.cancelled().await;
            let _ = stop_began.set(Instant::now());
            tokio::time::sleep(grace).await;
        }
    };
    let outcome = tokio::select! {
        outcome = dispatch(cli.command, ctx.clone(), admin_addr) => outcome,
        () = deadline => {
            tracing::warn!(?grace, "the role did not stop within the grace period");
            Ok(ExitCode::FAILURE)
        }
    };

    let mut remaining =
        stop_began.get().map_or(grace, |t: &Instant| grace.saturating_sub(t.elapsed()));
    if bench {
        // Nothing of a benchmark is worth waiting for: its children die with their handles.
        remaining = remaining.min(BENCH_STOP);
    }
    if !ctx.drain(remaining).await {
        tracing::warn!(?grace, "some tasks did not finish within the grace period");
    }
    admin_token.cancel();
    let _ = admin.await;
    telemetry.shutdown();
    outcome
}

/// Whether `err` is a configuration mistake (bad URL, out-of-range value): exit 64, not 1.
fn is_config_error(err: &anyhow::Error) -> bool {
    switchboard_core::ConfigError::in_chain(err.as_ref())
}

/// Whether `command` is a benchmark run (not the reference server a benchmark starts as a
/// child, which stops like any server).
fn is_bench(command: &Command) -> bool {
    match command {
        Command::Bench(Bench::Presence(args)) => args.serve_reference.is_none(),
        Command::Bench(_) => true,
        _ => false,
    }
}

/// Runs a benchmark until it prints its result, or until the first signal: an interrupted
/// measurement is no result, so the run stops at once with [`EXIT_INTERRUPTED`].
async fn run_bench(which: Bench, ctx: Ctx) -> anyhow::Result<ExitCode> {
    let stop = ctx.shutdown.clone();
    let measure = async move {
        match which {
            Bench::Aggregator(args) => switchboard_aggregator::bench(args, ctx).await?,
            Bench::Presence(args) => switchboard_presence::bench(args, ctx).await?,
            Bench::Jobproxy(args) => switchboard_jobproxy::bench(args, ctx).await?,
            Bench::Control(args) => switchboard_control::bench(args, ctx).await?,
            Bench::Tracker(args) => switchboard_tracker::bench(args, ctx).await?,
        }
        anyhow::Ok(())
    };
    tokio::select! {
        outcome = measure => outcome.map(|()| ExitCode::SUCCESS),
        () = stop.cancelled() => {
            eprintln!("bench interrupted: no result");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    }
}

/// The console's job check: the jobclient's 50 jobs against the proxy of this process, found
/// through the status the proxy publishes (so any process with a proxy, demo or not, has it).
fn console_options() -> switchboard_console::Options {
    let jobcheck = switchboard_console::job_check(|| async {
        let url = switchboard_core::status::get("jobproxy")
            .and_then(|s| s.get("url")?.as_str().map(str::to_owned))
            .ok_or_else(|| "no jobproxy runs in this process".to_owned())?;
        switchboard_jobproxy::jobcheck(&url, JOBCHECK_JOBS, JOBCHECK_DEADLINE)
            .await
            .map_err(|e| switchboard_core::describe_error(&e))
    });
    switchboard_console::Options { jobcheck: Some(jobcheck) }
}

/// The jobclient's contract: 50 jobs at once, all done within 5 s.
const JOBCHECK_JOBS: usize = 50;
const JOBCHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

fn tokio_util_token() -> switchboard_core::shutdown::CancellationToken {
    switchboard_core::shutdown::CancellationToken::new()
}

async fn dispatch(
    command: Command,
    ctx: Ctx,
    admin_addr: std::net::SocketAddr,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => demo::run(args, ctx, admin_addr).await?,
        Command::Aggregator(args) => switchboard_aggregator::run(args, ctx).await?,
        Command::Presence(cmd) => switchboard_presence::run(cmd, ctx).await?,
        Command::Jobproxy(args) => switchboard_jobproxy::run(args, ctx).await?,
        Command::Jobclient(args) => {
            let passed = switchboard_jobproxy::run_jobclient(args, ctx).await?;
            return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Control(cmd) => switchboard_control::run(cmd, ctx).await?,
        Command::Tracker(cmd) => switchboard_tracker::run(cmd, ctx).await?,
        Command::Sim(Sim::Wsserver(args)) => {
            switchboard_aggregator::run_wsserver(args, ctx).await?
        }
        Command::Sim(Sim::Jobserver(args)) => {
            switchboard_jobproxy::run_jobserver(args, ctx).await?
        }
        Command::Bench(Bench::Presence(args)) if args.serve_reference.is_some() => {
            switchboard_presence::bench(args, ctx).await?
        }
        Command::Bench(which) => return run_bench(which, ctx).await,
        Command::Probe(_) => unreachable!("probe runs before the runtime starts"),
    }
    Ok(ExitCode::SUCCESS)
}
