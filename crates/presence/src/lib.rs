//! presence — gRPC gateway pinging every connected client each second, and a status service
//! answering "unique users online in the last 3 minutes"; plus the clients.
#![forbid(unsafe_code)]

mod error;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint};
use switchboard_store::Store;

pub use error::{Error, Result};

/// Roles of this service.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// gRPC gateway holding client streams.
    Gateway(GatewayArgs),
    /// Status service answering StatusReader.
    Status(StatusArgs),
    /// One client.
    Client(ClientArgs),
    /// Many simulated clients in one process.
    Clients(ClientsArgs),
}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {}

/// Flags of one role.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientsArgs {}

/// `switchboard bench presence` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs one role until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run(_cmd: Command, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("presence"))
}

/// Runs the presence benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("bench presence"))
}

/// Starts the demo set on the shared embedded bus and store; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(_ctx: &Ctx, _bus: &Bus, _store: &Store) -> Result<Vec<Endpoint>> {
    Ok(Vec::new())
}
