//! `switchboard bench presence` (being built).
use switchboard_core::Ctx;

use crate::{Error, Result};

/// `switchboard bench presence` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
///
/// # Errors
/// The benchmark cannot run.
pub async fn run(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::Bench("not built yet".into()))
}
