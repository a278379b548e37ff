//! The live web console: one page (`GET /console`) with a section per service, updated once a
//! second over server-sent events.
//!
//! It reads only what a process already exposes — the Prometheus metrics of
//! [`switchboard_core::telemetry`] and the snapshots of [`switchboard_core::status`] — so it
//! depends on no service, and no service depends on it. The one action it offers, the 50-job
//! check of the jobproxy, is a function the binary passes in ([`JobCheck`]).
//!
//! # Layout
//! * `page` — `GET /console`: the embedded page, with the current snapshot inlined so it
//!   shows data before the event stream opens.
//! * `exposition` — the Prometheus text format, parsed into named series.
//! * `snapshot` — one JSON document per second: a section per service, from metrics + status.
//! * `events` — the sampler task and `GET /console/events` (SSE), `GET /console/snapshot`.
//! * `actions` — `POST /console/jobcheck`: one check at a time, 409 while one runs.
#![forbid(unsafe_code)]

mod actions;
mod events;
mod exposition;
mod page;
mod snapshot;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use switchboard_core::CancellationToken;

pub use actions::{JobCheck, job_check};

/// What the binary plugs into the console.
#[derive(Clone, Default)]
pub struct Options {
    /// Runs the jobproxy's 50-job check and returns its result as JSON; `None` hides the action.
    pub jobcheck: Option<JobCheck>,
}

/// The console's routes under `/console`. Spawns the sampler, which runs until `stop` is
/// cancelled; open event streams end with it.
///
/// # Panics
/// Outside a tokio runtime (the sampler is spawned).
pub fn router(options: Options, stop: CancellationToken) -> Router {
    let actions = Arc::new(actions::Actions::new(options.jobcheck));
    let latest = events::spawn_sampler(Arc::clone(&actions), stop);
    let state = State { latest, actions };
    Router::new()
        .route("/console", get(page::console))
        .route("/console/", get(page::console))
        .route("/console/events", get(events::stream))
        .route("/console/snapshot", get(events::current))
        .route("/console/jobcheck", post(actions::jobcheck))
        .with_state(state)
}

/// Shared by the handlers: the latest snapshot and the actions.
#[derive(Clone)]
struct State {
    latest: tokio::sync::watch::Receiver<Arc<str>>,
    actions: Arc<actions::Actions>,
}
