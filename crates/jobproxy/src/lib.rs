//! jobproxy — turns synchronous "start job and wait" requests into asynchronous callback jobs
//! upstream; plus the job-server simulator and the jobclient.
#![forbid(unsafe_code)]

mod error;

use switchboard_core::{Ctx, Endpoint};

pub use error::{Error, Result};

/// `switchboard jobproxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// `switchboard sim jobserver` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct JobServerArgs {}

/// `switchboard jobclient` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct JobClientArgs {}

/// `switchboard bench jobproxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the proxy until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run(_args: Args, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("jobproxy"))
}

/// Runs the job-server simulator until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run_jobserver(_args: JobServerArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("sim jobserver"))
}

/// Runs the jobclient; `Ok(true)` when every job succeeded in time.
///
/// # Errors
/// The client cannot run at all.
pub async fn run_jobclient(_args: JobClientArgs, _ctx: Ctx) -> Result<bool> {
    Err(Error::NotImplemented("jobclient"))
}

/// Runs the jobproxy benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("bench jobproxy"))
}

/// Starts the demo set (job server + proxy) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(_ctx: &Ctx) -> Result<Vec<Endpoint>> {
    Ok(Vec::new())
}
