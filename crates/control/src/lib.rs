//! control — an operator console drives remote agents through start/stop/terminate, ping
//! and calculate, safely against untrusted messages.
#![forbid(unsafe_code)]

mod error;

use switchboard_core::{Ctx, Endpoint};

pub use error::{Error, Result};

/// `switchboard control <role>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The operator console (gRPC server the agents dial).
    Server(ServerArgs),
    /// A remote agent.
    Agent(AgentArgs),
}

/// `switchboard control server` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {}

/// `switchboard control agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {}

/// `switchboard bench control` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs one control role until it ends or `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run(_cmd: Command, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("control"))
}

/// Runs the control benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("bench control"))
}

/// Starts the demo set (console server + agents) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(_ctx: &Ctx) -> Result<Vec<Endpoint>> {
    Ok(Vec::new())
}
