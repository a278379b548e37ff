//! The command line: one subcommand per service (and role), plus demo, sims and benches.
//! Every flag also reads a `SWITCHBOARD_*` environment variable and the `--config` TOML file.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_core::telemetry::LogFormat;

/// Help heading of the flags every command takes, so a role's `--help` lists its own first.
const GLOBAL: &str = "Global Options";

/// Switchboard: five real-time services behind one binary.
///
/// Start with `switchboard demo`: every service in one process on loopback, embedded bus and
/// store. Run one role per process (`switchboard presence gateway`, …) with `--bus nats://…`
/// and `--store postgres://…` to scale out.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter, default `info`; `warn` for benchmarks).
    #[arg(long, global = true, help_heading = GLOBAL, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`); port 0 picks a free one.
    #[arg(long, global = true, help_heading = GLOBAL, env = "SWITCHBOARD_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_tls: switchboard_core::tls::AdminTlsArgs,

    /// Optional TOML file with defaults for any flag (flags and env vars win over it).
    #[arg(long, global = true, help_heading = GLOBAL, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How long to wait for in-flight work to drain after SIGINT/SIGTERM.
    #[arg(long, global = true, help_heading = GLOBAL, env = "SWITCHBOARD_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service in one process on loopback with embedded defaults.
    #[command(visible_alias = "all")]
    Demo(DemoArgs),
    /// Websocket aggregator client.
    Aggregator(switchboard_aggregator::Args),
    /// Presence: gateway, status service and clients.
    #[command(subcommand)]
    Presence(switchboard_presence::Command),
    /// Synchronous-to-asynchronous job proxy.
    Jobproxy(switchboard_jobproxy::Command),
    /// Checks that 50 jobs through a proxy finish in time.
    Jobclient(switchboard_jobproxy::JobClientArgs),
    /// Command & control: console server and agents.
    #[command(subcommand)]
    Control(switchboard_control::Command),
    /// Event tracking: collector, worker, reports API.
    #[command(subcommand)]
    Tracker(switchboard_tracker::Command),
    /// Simulators of the systems our services talk to.
    #[command(subcommand)]
    Sim(Sim),
    /// Benchmarks: a human table and one JSON line, with a reference measured in the same run.
    #[command(subcommand)]
    Bench(Bench),
    /// GETs a path of a running process's admin server (at `--admin-addr`) and prints the body;
    /// exit 0 on a 2xx answer, 1 otherwise. The container image's health check.
    Probe(ProbeArgs),
}

/// `switchboard probe` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Path to GET (`/readyz`, `/healthz`, `/metrics`).
    #[arg(default_value = "/readyz")]
    pub path: String,
    /// Give up after this long.
    #[arg(long, env = "SWITCHBOARD_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `switchboard demo` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Directory for the embedded SQLite store.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Simulators.
#[derive(Debug, Subcommand)]
pub enum Sim {
    /// Websocket server feeding the aggregator and checking its reports.
    Wsserver(switchboard_aggregator::WsServerArgs),
    /// Job server with the upstream contract of the jobproxy.
    Jobserver(switchboard_jobproxy::JobServerArgs),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Aggregator messages/s vs. plain websocket+JSON parsing.
    Aggregator(switchboard_aggregator::BenchArgs),
    /// Clients per gateway, ping jitter, memory per client; status ingest rate.
    Presence(switchboard_presence::BenchArgs),
    /// 50-job time and 10,000 held requests.
    Jobproxy(switchboard_jobproxy::BenchArgs),
    /// Command round-trip with 1 and 1,000 agents.
    Control(switchboard_control::BenchArgs),
    /// Events/s through the collector and end to end.
    Tracker(switchboard_tracker::BenchArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
