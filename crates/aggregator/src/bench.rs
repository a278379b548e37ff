//! `switchboard bench aggregator` (placeholder until written).
use switchboard_core::Ctx;

use crate::{Error, Result};

/// `switchboard bench aggregator` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::Bench("not written yet".into()))
}
