//! `switchboard bench jobproxy` (placeholder while the benchmark is written).
use switchboard_core::Ctx;

use crate::{Error, Result};

/// `switchboard bench jobproxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs, _ctx: Ctx) -> Result<()> {
    Err(Error::Bench("not written yet".into()))
}
