//! aggregator — websocket client that merges parent/child maps, counts calls between parent
//! services per window and reports them back over the same socket; plus the wsserver
//! simulator that checks those reports and the benchmark.
//!
//! # Layout
//! * `protocol` — the JSON wire contract, parsed into 128-bit ids.
//! * `associations` — child → interned parent, cumulative and capped.
//! * `window` — the per-window count, the unknown-child policy and the window schedule.
//! * `intake` — frames in, reports out; the state that survives reconnects.
//! * `outbox` — bounded queue of reports not yet written.
//! * `session` / `client` — one connection; the connect–backoff–reconnect loop.
//! * `wsserver` — the simulator with its ground-truth `ledger`.
//! * `status` — the last report's call graph and the simulator's verdicts, for viewers.
//! * `bench` — messages/s against a parse-only reference.
//! * `demo` — the simulator and the client in one process, with a short window.
#![forbid(unsafe_code)]

mod associations;
mod bench;
mod client;
mod demo;
mod error;
mod intake;
mod ledger;
mod outbox;
mod protocol;
mod session;
mod status;
mod window;
mod wsserver;

use std::sync::Arc;

use switchboard_core::{Ctx, Endpoint, SystemClock};

pub use bench::BenchArgs;
pub use client::Args;
pub use error::{Error, Result};
pub use wsserver::WsServerArgs;

/// Runs the aggregator until `ctx.shutdown`, then flushes the open window.
///
/// # Errors
/// The flags are invalid (bad URL, interval too short).
pub async fn run(args: Args, ctx: Ctx) -> Result<()> {
    client::run(args, Arc::new(SystemClock), ctx).await
}

/// Runs the wsserver simulator until `ctx.shutdown` (or until `--expect-reports` are checked).
///
/// # Errors
/// The listener cannot be bound, or a report did not match the ground truth.
pub async fn run_wsserver(args: WsServerArgs, ctx: Ctx) -> Result<()> {
    wsserver::run(args, ctx).await
}

/// Runs the aggregator benchmark and prints its table and JSON line.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}

/// Starts the demo set (simulator + aggregator) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    demo::start(ctx).await
}
