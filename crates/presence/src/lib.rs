//! presence — who is online: a gRPC gateway pinging every connected client each second, a
//! status service answering "unique users online in the last 3 minutes", and the clients.
//!
//! # Layout
//! * `proto` — generated `tenten.interview` code (wire-fixed StatusReader/Ping/Pong/Status, our
//!   `Gateway` service and bus batch) and the descriptor set for reflection.
//! * `gateway` — holds client streams; one ping timer for all; forwards reports in batches.
//! * `report` — the bus stream and the batch format between gateways and status.
//! * `status` — consumes reports into the `window`, answers StatusReader, snapshots to the store.
//! * `window` — exact unique-users-in-the-last-N-seconds with per-second buckets (O(1) reads).
//! * `client` / `clients` — one client with reconnect/failover; many simulated ones.
//! * `auth` — client tokens (HMAC of the client id); `tls` — TLS of listeners and clients.
//! * `jitter` — the Ping-interval histogram clients keep; `bench` — `switchboard bench presence`.
//! * `trace` — W3C trace context carried client → gateway → bus → status; `codec` — prost with
//!   small per-stream buffers.
//! * `role` — the `switchboard presence …` subcommands, their flags, and how each starts.
//! * `demo` — everything in one process (embedded mode and `switchboard demo`).
#![forbid(unsafe_code)]

mod auth;
mod bench;
mod client;
mod clients;
mod codec;
mod demo;
mod error;
mod gateway;
mod jitter;
pub mod proto;
mod report;
mod role;
mod status;
mod tls;
mod trace;
mod window;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint};
use switchboard_store::Store;

pub use bench::BenchArgs;
pub use client::ClientArgs;
pub use clients::{ClientsArgs, spawn as spawn_clients};
pub use error::{Error, Result};
pub use gateway::{GatewayArgs, Running as RunningGateway, start as start_gateway};
pub use role::{AllArgs, Command, OnlineArgs, TokenArgs, run};
pub use status::{StatusArgs, fetch_online, fetch_online_with, start as start_status};
pub use tls::ClientTls;

/// Runs the presence benchmark (`switchboard bench presence`).
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}

/// Starts the demo set on the shared embedded bus and store; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx, bus: &Bus, store: &Store) -> Result<Vec<Endpoint>> {
    demo::start(ctx, bus, store, GatewayArgs::loopback(), &StatusArgs::loopback(), 50).await
}
