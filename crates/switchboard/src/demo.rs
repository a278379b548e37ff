//! `switchboard demo`: every service in one process on loopback, sharing one in-memory bus and
//! one embedded SQLite store, with the simulators feeding them. Prints what runs where, then
//! runs until Ctrl-C.
use std::net::SocketAddr;

use anyhow::Context as _;
use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint};
use switchboard_store::Store;

use crate::cli::DemoArgs;

pub async fn run(args: DemoArgs, ctx: Ctx, admin_addr: SocketAddr) -> anyhow::Result<()> {
    // Not ready until every service has started (each registers its own components as it
    // starts; without this, /readyz could say ready between two of them).
    ctx.health.register("demo");
    let bus = Bus::memory();
    let db = args.data_dir.join("switchboard.db");
    let store_url = format!("sqlite://{}", db.display());
    let store = Store::connect(&store_url).await.with_context(|| format!("opening {store_url}"))?;

    let mut endpoints = vec![
        // First: the one page that shows every service below, live.
        Endpoint::new(
            "console",
            "web console (every service, live)",
            format!("http://{admin_addr}/console"),
        ),
        Endpoint::new("core", "admin: health, readiness", format!("http://{admin_addr}/readyz")),
        Endpoint::new("core", "admin: Prometheus metrics", format!("http://{admin_addr}/metrics")),
        Endpoint::new(
            "core",
            "admin: status snapshots (JSON)",
            format!("http://{admin_addr}/status"),
        ),
        Endpoint::new("core", "embedded store", store_url),
        Endpoint::new("core", "bus", "memory://"),
    ];
    endpoints.extend(switchboard_aggregator::demo(&ctx).await.context("starting aggregator")?);
    endpoints
        .extend(switchboard_presence::demo(&ctx, &bus, &store).await.context("starting presence")?);
    endpoints.extend(switchboard_jobproxy::demo(&ctx).await.context("starting jobproxy")?);
    endpoints.extend(switchboard_control::demo(&ctx).await.context("starting control")?);
    endpoints
        .extend(switchboard_tracker::demo(&ctx, &bus, &store).await.context("starting tracker")?);

    print_table(&endpoints);
    ctx.health.set_ready("demo", true);
    ctx.shutdown.cancelled().await;
    println!("shutting down: draining every service…");
    // No `store.close()` here: services still write their last batches and snapshots while
    // `main` drains them. The pool closes when the last service drops its handle.
    drop(store);
    Ok(())
}

fn print_table(endpoints: &[Endpoint]) {
    let w_service = endpoints.iter().map(|e| e.service.len()).max().unwrap_or(0).max(7);
    let w_what = endpoints.iter().map(|e| e.what.len()).max().unwrap_or(0).max(4);
    println!("Switchboard demo is running. Press Ctrl-C to stop.\n");
    println!("{:<w_service$}  {:<w_what$}  where", "service", "what");
    for e in endpoints {
        println!("{:<w_service$}  {:<w_what$}  {}", e.service, e.what, e.url);
    }
    println!();
}
