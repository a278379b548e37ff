//! tracker — HTTP collector → durable bus → workers → store → reports API + dashboard.
#![forbid(unsafe_code)]

mod error;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint};
use switchboard_store::Store;

pub use error::{Error, Result};

/// Roles of this service.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// HTTP collector (`POST /track`).
    Collector(CollectorArgs),
    /// Stream consumer writing raw events and the read model.
    Worker(WorkerArgs),
    /// Reports API and dashboard.
    Api(ApiArgs),
}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {}

/// `switchboard bench tracker` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs one role until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run(_cmd: Command, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("tracker"))
}

/// Runs the tracker benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("bench tracker"))
}

/// Starts the demo set on the shared embedded bus and store; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(_ctx: &Ctx, _bus: &Bus, _store: &Store) -> Result<Vec<Endpoint>> {
    Ok(Vec::new())
}
