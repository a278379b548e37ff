//! Starting each role: connect what it needs, bind, spawn its tasks on the [`Ctx`], mark it
//! ready. Shared by `switchboard tracker <role>`, the demo and the benchmark.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint, SystemClock, admin};
use switchboard_store::Store;

use crate::api::{self, ApiState};
use crate::batch::Limits;
use crate::collector::{self, CollectorState};
use crate::config::{ApiArgs, CollectorArgs, Command, WorkerArgs};
use crate::event::Validator;
use crate::generator;
use crate::journal::{Journal, Sink};
use crate::worker::{self, WorkerConfig};
use crate::{Error, Result};

/// Runs one role until `ctx.shutdown`.
///
/// # Errors
/// Startup fails (bad flags, unreachable bus or store, address in use).
pub async fn run(cmd: Command, ctx: Ctx) -> Result<()> {
    match cmd {
        Command::Collector { settings: args, backends } => {
            if args.fold && !Bus::is_process_local_url(&backends.bus) {
                return Err(Error::config(
                    "--fold needs the embedded journal (--bus memory://): with a durable bus, \
                     workers fold what the stream holds",
                ));
            }
            let bus = Bus::connect(&backends.bus).await?;
            // With a durable bus the collector needs the store only to serve reports.
            let needs_store = bus.is_process_local() || args.serve_api;
            let store = if needs_store { Some(open_store(&backends.store).await?) } else { None };
            let sink = match &store {
                Some(store) if args.fold => Sink::Fold(store.clone()),
                Some(store) => Sink::for_deployment(&bus, store),
                None => Sink::Stream(bus.clone()),
            };
            let api_store = if args.serve_api { store } else { None };
            start_collector(&args, sink, api_store, &ctx).await?;
            ctx.shutdown.cancelled().await;
        }
        Command::Worker { settings: args, backends } => {
            let bus = Bus::connect(&backends.bus).await?;
            let store = open_store(&backends.store).await?;
            // Awaited, not spawned: a worker that cannot start fails the process.
            worker::run(worker_config(&args)?, bus, store, ctx).await?;
        }
        Command::Api { settings: args, store } => {
            let store = open_store(&store).await?;
            start_api(&args, store, &ctx).await?;
            ctx.shutdown.cancelled().await;
        }
    }
    Ok(())
}

/// Starts the demo set on the shared embedded bus and store: a collector (with the reports
/// API and dashboard on the same port), a worker, and an event generator posting batches.
///
/// # Errors
/// A component fails to start.
pub async fn demo(ctx: &Ctx, bus: &Bus, store: &Store) -> Result<Vec<Endpoint>> {
    migrate(store).await?;
    let args = CollectorArgs::ephemeral();
    let sink = Sink::for_deployment(bus, store);
    let addr = start_collector(&args, sink, Some(store.clone()), ctx).await?;
    let worker = WorkerArgs::with_idle_poll(Duration::from_millis(100));
    start_worker(&worker, bus.clone(), store.clone(), ctx)?;
    let batch_url = format!("http://{addr}/track/batch");
    generator::spawn_feed(batch_url.clone(), 20, Duration::from_millis(200), ctx);
    Ok(vec![
        Endpoint::new("tracker", "collector: POST one event", format!("http://{addr}/track")),
        Endpoint::new("tracker", "collector: POST a batch (event generator feeding it)", batch_url),
        Endpoint::new("tracker", "dashboard (live reports)", format!("http://{addr}/")),
        Endpoint::new("tracker", "reports API", format!("http://{addr}/api/series")),
    ])
}

/// This service's migrations, one directory per engine (versions 6xxx).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// PostgreSQL migrations.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Opens the store at `url` and applies the tracker schema.
///
/// # Errors
/// The store cannot be opened or migrated.
pub async fn open_store(url: &str) -> Result<Store> {
    let store = Store::connect(url).await?;
    migrate(&store).await?;
    Ok(store)
}

/// Applies the tracker schema to an open store.
///
/// # Errors
/// A migration fails.
pub async fn migrate(store: &Store) -> Result<()> {
    store.migrate(&SQLITE_MIGRATOR, &PG_MIGRATOR).await?;
    Ok(())
}

/// Starts a collector whose journal is `sink`; with `api_store`, the reports API and
/// dashboard are served on the same address. Returns the bound address.
///
/// # Errors
/// Invalid limits, or the address cannot be bound.
pub async fn start_collector(
    args: &CollectorArgs,
    sink: Sink,
    api_store: Option<Store>,
    ctx: &Ctx,
) -> Result<SocketAddr> {
    if args.max_body_bytes == 0 || args.max_batch_events == 0 || args.queue_capacity == 0 {
        return Err(Error::config(
            "--max-body-bytes, --max-batch-events and --queue-capacity must be positive",
        ));
    }
    sink.prepare().await?;
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let state = CollectorState {
        validator: Validator::new(
            Arc::new(SystemClock),
            args.max_event_age.map(ms),
            ms(args.max_clock_skew),
        ),
        limits: Limits { max_body_bytes: args.max_body_bytes, max_events: args.max_batch_events },
        journal: Journal::start(sink, args.queue_capacity, ctx),
    };
    let mut app = collector::router(state);
    let with_api = api_store.is_some();
    if let Some(store) = api_store {
        let token = args.access.token();
        app = app.merge(api::router(ApiState { store, clock: Arc::new(SystemClock), token }));
    }
    let addr = serve(args.listen, app, &args.listener, "tracker-collector", ctx).await?;
    if with_api {
        publish_dashboard(addr);
    }
    ctx.health.set_ready("tracker-collector", true);
    tracing::info!(url = %format!("http://{addr}/track"), "tracker collector listening");
    Ok(addr)
}

/// Starts the reports API and dashboard. Returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn start_api(args: &ApiArgs, store: Store, ctx: &Ctx) -> Result<SocketAddr> {
    let token = args.access.token();
    let app = api::router(ApiState { store, clock: Arc::new(SystemClock), token });
    let addr = serve(args.listen, app, &args.listener, "tracker-api", ctx).await?;
    publish_dashboard(addr);
    ctx.health.set_ready("tracker-api", true);
    tracing::info!(url = %format!("http://{addr}/"), "tracker dashboard listening");
    Ok(addr)
}

/// Tells read-only viewers (the web console) where the dashboard is; a wildcard address is
/// shown as loopback, the only address certain to reach it.
fn publish_dashboard(addr: SocketAddr) {
    let port = addr.port();
    let host =
        if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let base = if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    };
    switchboard_core::status::publish(
        "tracker",
        serde_json::json!({ "dashboard": format!("{base}/dashboard"), "api": format!("{base}/api/series") }),
    );
}

/// Binds `listen` and serves `app` on `ctx` until shutdown (in-flight requests finish).
async fn serve(
    listen: SocketAddr,
    app: axum::Router,
    flags: &crate::config::Listener,
    what: &'static str,
    ctx: &Ctx,
) -> Result<SocketAddr> {
    let (limits, tls) = (flags.limits(what), flags.tls.server_config()?);
    let (listener, addr) = admin::bind(listen).await?;
    let shutdown = ctx.shutdown.clone();
    ctx.spawn(async move {
        let stop = shutdown.cancelled_owned();
        if let Err(e) = switchboard_core::http::serve(listener, app, limits, tls, what, stop).await
        {
            tracing::error!(error = %switchboard_core::describe_error(&e), server = what, "HTTP server failed");
        }
    });
    Ok(addr)
}

/// The worker's settings from its flags.
///
/// # Errors
/// Invalid flags.
pub fn worker_config(args: &WorkerArgs) -> Result<WorkerConfig> {
    if args.batch_entries == 0 {
        return Err(Error::config("--batch-entries must be positive"));
    }
    Ok(WorkerConfig {
        batch_entries: args.batch_entries,
        consumer: args.consumer.clone(),
        ack_wait: args.ack_wait,
        idle_poll: args.idle_poll,
    })
}

/// Spawns a worker on `ctx` (demo, benchmark); a worker that cannot start is logged and
/// leaves `tracker-worker` not ready.
///
/// # Errors
/// Invalid flags.
pub fn start_worker(args: &WorkerArgs, bus: Bus, store: Store, ctx: &Ctx) -> Result<()> {
    let cfg = worker_config(args)?;
    ctx.health.register("tracker-worker");
    let worker_ctx = ctx.clone();
    ctx.spawn(async move {
        if let Err(e) = worker::run(cfg, bus, store, worker_ctx.clone()).await {
            tracing::error!(error = %switchboard_core::describe_error(&e), "tracker worker failed to start");
            worker_ctx.health.set_ready("tracker-worker", false);
        }
    });
    Ok(())
}
