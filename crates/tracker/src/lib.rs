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
//! * `role` — starting each role on a [`Ctx`].
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

use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint};
use switchboard_store::Store;

pub use audit::{Audit, audit};
pub use config::{ApiArgs, Backends, BenchArgs, CollectorArgs, Command, WorkerArgs};
pub use error::{Error, Result};
pub use journal::{STREAM, SUBJECT};
pub use outbox::pending_events;
pub use report::total as folded_events;
pub use role::{PG_MIGRATOR, SQLITE_MIGRATOR, migrate, open_store};

/// Runs one role until `ctx.shutdown`.
///
/// # Errors
/// Startup fails (bad flags, unreachable bus or store, address in use).
pub async fn run(cmd: Command, ctx: Ctx) -> Result<()> {
    match cmd {
        Command::Collector(args) => {
            if args.fold && !Bus::is_process_local_url(&args.backends.bus) {
                return Err(Error::config(
                    "--fold needs the embedded journal (--bus memory://): with a durable bus, \
                     workers fold what the stream holds",
                ));
            }
            let bus = Bus::connect(&args.backends.bus).await?;
            // With a durable bus the collector needs the store only to serve reports.
            let needs_store = bus.is_process_local() || args.serve_api;
            let store =
                if needs_store { Some(open_store(&args.backends.store).await?) } else { None };
            let sink = match &store {
                Some(store) if args.fold => journal::Sink::Fold(store.clone()),
                Some(store) => journal::Sink::for_deployment(&bus, store),
                None => journal::Sink::Stream(bus.clone()),
            };
            let api_store = if args.serve_api { store } else { None };
            role::start_collector(&args, sink, api_store, &ctx).await?;
            ctx.shutdown.cancelled().await;
        }
        Command::Worker(args) => {
            let bus = Bus::connect(&args.backends.bus).await?;
            let store = open_store(&args.backends.store).await?;
            // Awaited, not spawned: a worker that cannot start fails the process.
            worker::run(role::worker_config(&args)?, bus, store, ctx).await?;
        }
        Command::Api(args) => {
            let store = open_store(&args.store).await?;
            role::start_api(&args, store, &ctx).await?;
            ctx.shutdown.cancelled().await;
        }
    }
    Ok(())
}

/// Runs the tracker benchmark: prints a table and one JSON line.
///
/// # Errors
/// The benchmark cannot run (ports, store, or a phase timing out).
pub async fn bench(args: BenchArgs, ctx: Ctx) -> Result<()> {
    bench::run(args, ctx).await
}

/// Starts the demo set on the shared embedded bus and store: a collector (with the reports
/// API and dashboard on the same port), a worker, and an event generator posting batches.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx, bus: &Bus, store: &Store) -> Result<Vec<Endpoint>> {
    migrate(store).await?;
    let args = CollectorArgs::ephemeral();
    let sink = journal::Sink::for_deployment(bus, store);
    let addr = role::start_collector(&args, sink, Some(store.clone()), ctx).await?;
    let worker = WorkerArgs::with_idle_poll(Duration::from_millis(100));
    role::start_worker(&worker, bus.clone(), store.clone(), ctx)?;
    let batch_url = format!("http://{addr}/track/batch");
    generator::spawn_feed(batch_url.clone(), 20, Duration::from_millis(200), ctx);
    Ok(vec![
        Endpoint::new("tracker", "collector: POST one event", format!("http://{addr}/track")),
        Endpoint::new("tracker", "collector: POST a batch (event generator feeding it)", batch_url),
        Endpoint::new("tracker", "dashboard (live reports)", format!("http://{addr}/")),
        Endpoint::new("tracker", "reports API", format!("http://{addr}/api/series")),
    ])
}
