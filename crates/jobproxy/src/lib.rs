//! jobproxy — turns synchronous "start job and wait" requests into asynchronous callback jobs
//! upstream; plus the job-server simulator, the jobclient and the benchmark.
//!
//! # Layout
//! * `proxy` — the proxy role: HTTP front, held requests, passthrough, drain on shutdown.
//! * `upstream` — one keep-alive connection per account to the job server, fed by a bounded
//!   queue (the job server serves one connection per account at a time).
//! * `waiter` — held requests keyed by a 128-bit `token` (node id + random bits),
//!   callback-before-start safe.
//! * `callback` — the `/callback/{token}` endpoint and its answers.
//! * `forward` — callbacks for another node's tokens, forwarded to it over the bus.
//! * `failure` — how a failed request is answered (502/503/504 with a JSON reason).
//! * `job` — the job server's wire format.
//! * `jobserver` — the simulator (`switchboard sim jobserver`), with fault injection.
//! * `jobclient` — `switchboard jobclient`: N jobs at once, PASSED/FAILED.
//! * `bench` — `switchboard bench jobproxy`; `round_robin` — the TCP front it and the tests
//!   put in front of several nodes.
//! * `demo` — the demo set for `switchboard demo`.
#![forbid(unsafe_code)]

mod bench;
mod callback;
mod demo;
mod error;
mod failure;
mod forward;
mod front;
mod job;
mod jobclient;
mod jobserver;
mod proxy;
mod round_robin;
mod token;
mod upstream;
mod waiter;

use switchboard_core::{Ctx, Endpoint};

pub use bench::BenchArgs;
pub use error::{Error, Result};
pub use jobclient::{JobClientArgs, check as jobcheck};
pub use jobserver::{Faults, JobServer, JobServerArgs};
pub use proxy::{Args, Command, ProxyHandle, start as start_proxy};
pub use round_robin::RoundRobin;

/// Connects the bus, runs the proxy until `ctx.shutdown`, then drains held requests.
///
/// # Errors
/// Invalid flags, the bus is unreachable, or the listen address cannot be bound.
pub async fn run(cmd: Command, ctx: Ctx) -> Result<()> {
    let bus = switchboard_bus::Bus::connect(&cmd.bus).await?;
    proxy::start(cmd.settings, bus, &ctx).await?;
    ctx.shutdown.cancelled().await;
    Ok(())
}

/// Runs the job-server simulator until `ctx.shutdown`.
///
/// # Errors
/// The listen address cannot be bound.
pub async fn run_jobserver(args: JobServerArgs, ctx: Ctx) -> Result<()> {
    JobServer::start(args, &ctx).await?;
    ctx.shutdown.cancelled().await;
    Ok(())
}

/// Runs the jobclient; `Ok(true)` when every job succeeded in time.
///
/// # Errors
/// The client cannot run at all.
pub async fn run_jobclient(args: JobClientArgs, ctx: Ctx) -> Result<bool> {
    jobclient::run(args, ctx).await
}

/// Runs the jobproxy benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}

/// Starts the demo set (job server + proxy) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    demo::start(ctx).await
}
