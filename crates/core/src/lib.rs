//! Shared core of every Switchboard service.
//!
//! # Layout
//! * [`config`] — flags > `SWITCHBOARD_*` env vars > optional TOML file.
//! * [`telemetry`] — tracing (pretty or JSON), OTLP export, Prometheus recorder.
//! * [`health`] — readiness that turns 503 once shutdown starts.
//! * [`auth`] — constant-time comparison of shared secrets.
//! * [`admin`] — the admin HTTP router (`/healthz`, `/readyz`, `/metrics`, `/status`) and a
//!   server helper.
//! * [`http`] — the HTTP server of every listener: header/idle timeout, connection cap.
//! * [`grpc`] — the same limits on the accept side of every gRPC listener.
//! * [`shutdown`] — SIGINT/SIGTERM → cancel → drain with a deadline; the [`Ctx`] every role gets.
//! * [`redact`] — credentials masked out of every URL that reaches output.
//! * [`stats`] — quantiles for the benchmark programs.
//! * [`status`] — small read-only JSON snapshots by name, served as `/status`.
//! * [`tls`] — the `--tls-*` flags and rustls configuration of our HTTP listeners.
//! * [`url`] — the check of URLs roles dial (a scheme, http or https).
//! * [`window`] — clocks (real and manual) and wall-clock-aligned time windows.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod config;
mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod redact;
pub mod shutdown;
pub mod stats;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod url;
pub mod window;

pub use error::{ConfigError, Error, Result, describe as describe_error};
pub use health::Health;
pub use shutdown::Ctx;
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
pub use window::{Clock, ManualClock, SystemClock};

/// Something a running role exposes, printed by `switchboard demo` ("what runs where").
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Service name, e.g. `aggregator`.
    pub service: &'static str,
    /// What it is, e.g. `wsserver simulator`.
    pub what: String,
    /// Where it is, e.g. `ws://127.0.0.1:5050/ws`.
    pub url: String,
}

impl Endpoint {
    /// Convenience constructor.
    pub fn new(service: &'static str, what: impl Into<String>, url: impl Into<String>) -> Self {
        Self { service, what: what.into(), url: url.into() }
    }
}
