//! tracker — HTTP collector → durable journal → workers → store → reports API + dashboard.
//!
//! A CQRS pipeline for Logektor-style events (`{"objectId","objectType","action","subjectId",
//! "subjectType","datetimeStamp"}`):
//!
//! # Layout
//! * [`event`] — the wire shape, validation, the stored form (with an id given at ingest).
//! * `batch` — request bodies: gzip, JSON array or NDJSON, limits, all-or-nothing validation.
//! * `rejection` — every refusal (400/413/415/503) and its JSON answer.
//! * `journal` — group-committing writer: JetStream stream, or the store outbox in embedded mode.
//! * `collector` — `POST /track`, `POST /track/batch`.
//! * `outbox` — the embedded journal table, consumed exactly once.
//! * `readmodel` — raw events + idempotent folding into the read-model tables.
//! * `worker` — consume, fold, commit, then ack.
//! * `report`, `api` — the read side: JSON reports and the dashboard page.
//! * `audit` — recount from raw events; must always equal the read model.
//! * `generator`, `bench` — synthetic load for the demo and `switchboard bench tracker`.
//! * `role` — `switchboard tracker <role>` and the demo: starting each role on a [`Ctx`].
#![forbid(unsafe_code)]

mod api;
mod audit;
mod batch;
mod bench;
mod collector;
mod config;
mod error;
pub mod event;
mod generator;
mod journal;
mod outbox;
mod readmodel;
mod rejection;
mod report;
mod role;
mod worker;

use switchboard_core::Ctx;

pub use audit::{Audit, audit};
pub use config::{ApiArgs, Backends, BenchArgs, CollectorArgs, Command, WorkerArgs};
pub use error::{Error, Result};
pub use journal::{STREAM, SUBJECT};
pub use outbox::pending_events;
pub use report::total as folded_events;
pub use role::{PG_MIGRATOR, SQLITE_MIGRATOR, demo, migrate, open_store, run};

/// Runs the tracker benchmark: prints a table and one JSON line.
///
/// # Errors
/// The benchmark cannot run (ports, store, or a phase timing out).
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}
