//! control — an operator console drives remote agents through start/stop/terminate, ping
//! and calculate, safely against untrusted messages.
//!
//! # Layout
//! * [`proto`] — the wire contract (`proto/control.proto`): agents dial the console and hold
//!   one bidirectional gRPC stream; commands go down, replies come up, matched by id.
//! * `server` — `switchboard control server`: the listener plus the operator console.
//!   * `attach` — the Attach RPC: token check, agent cap, hello, name rules, reply flood limit.
//!   * `fleet` — attached agents, their bounded command queues and pending replies.
//!   * `console` — the command language, scripted/piped/interactive input, reply printing.
//! * `agent` — `switchboard control agent`: the session loop, concurrent calculations,
//!   reconnect with `switchboard_core::backoff`.
//!   * `op` — the five operations and the validation of every untrusted argument.
//!   * `state` — the unready/ready/terminated state machine (pure, property-tested).
//!   * `rate` — the token bucket both ends use.
//! * `tls` — optional TLS / mutual TLS flags for both ends.
//! * `bench` — `switchboard bench control`; `demo` — the demo set.
#![forbid(unsafe_code)]

mod agent;
mod attach;
mod bench;
mod console;
mod demo;
mod error;
mod fleet;
mod op;
pub mod proto;
mod rate;
mod server;
mod state;
mod tls;

use switchboard_core::{Ctx, Endpoint};

pub use agent::AgentArgs;
pub use bench::BenchArgs;
pub use error::{Error, Result};
pub use op::{MAX_MSG_BYTES, MAX_WIRE_BYTES};
pub use server::ServerArgs;
pub use tls::{AgentTls, ServerTls};

/// `switchboard control <role>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The operator console (gRPC server the agents dial).
    // Boxed: the flag structs are large and the binary's top-level command enum holds this.
    Server(Box<ServerArgs>),
    /// A remote agent.
    Agent(Box<AgentArgs>),
}

/// Runs one control role until it ends or `ctx.shutdown`.
///
/// The server returns when its input ends (unless `--stay`); the agent returns when the
/// console sends `terminate` (exit 0) or on shutdown.
///
/// # Errors
/// Startup fails, or an agent's token is refused.
pub async fn run(cmd: Command, ctx: Ctx) -> Result<()> {
    match cmd {
        Command::Server(args) => server::run(*args, ctx).await,
        Command::Agent(args) => agent::run(*args, ctx).await.map(|_| ()),
    }
}

/// Runs the control benchmark: command round-trip p50/p99 with 1 and with many agents.
///
/// # Errors
/// The benchmark cannot run.
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}

/// Starts the demo set (console server + agents) on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    demo::start(ctx).await
}
