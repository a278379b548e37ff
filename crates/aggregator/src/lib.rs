//! aggregator — websocket client that merges parent/child maps, counts calls between parent
//! services per minute and reports them back over the same socket; plus the wsserver simulator.
#![forbid(unsafe_code)]

mod error;

use switchboard_core::{Ctx, Endpoint};

pub use error::{Error, Result};

/// `switchboard aggregator` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Websocket URL of the server to aggregate.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = "ws://127.0.0.1:5050/ws")]
    pub server: String,
}

/// `switchboard sim wsserver` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WsServerArgs {}

/// `switchboard bench aggregator` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the aggregator until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run(_args: Args, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("aggregator"))
}

/// Runs the wsserver simulator until `ctx.shutdown`.
///
/// # Errors
/// Startup fails.
pub async fn run_wsserver(_args: WsServerArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("sim wsserver"))
}

/// Runs the aggregator benchmark and prints its table and JSON line.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::NotImplemented("bench aggregator"))
}

/// Starts the demo set (simulator + aggregator) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(_ctx: &Ctx) -> Result<Vec<Endpoint>> {
    Ok(Vec::new())
}
