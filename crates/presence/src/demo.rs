//! Presence in one process: status replica, gateway and simulated clients on a shared bus and
//! store. Used by `switchboard demo` and by `switchboard presence all` (embedded mode).
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint, SystemClock};
use switchboard_store::Store;

use crate::Result;
use crate::clients::{self, ClientsArgs};
use crate::gateway::{self, GatewayArgs};
use crate::jitter::Jitter;
use crate::status::{self, StatusArgs};

/// Starts a status replica and a gateway on `bus`/`store` and, if `clients > 0`, that many
/// simulated clients; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub async fn start(
    ctx: &Ctx,
    bus: &Bus,
    store: &Store,
    gateway_args: GatewayArgs,
    status_args: &StatusArgs,
    clients: usize,
) -> Result<Vec<Endpoint>> {
    let status_addr =
        status::start(status_args, bus.clone(), store.clone(), Arc::new(SystemClock), ctx.clone())
            .await?;
    let gateway = gateway::start(gateway_args, bus.clone(), ctx.clone()).await?;
    let gateway_url = format!("http://{}", gateway.addr);
    let status_url = format!("http://{status_addr}");
    ctx.spawn(log_count(status_url.clone(), ctx.shutdown.clone()));
    // The clients' Ping jitter, for read-only viewers (the web console) beside the URLs.
    let jitter = Arc::new(Jitter::new(Duration::from_secs(1)));
    if clients > 0 {
        let args = ClientsArgs::new(clients, vec![gateway_url.clone()]);
        clients::spawn(&args, Some(jitter.clone()), ctx)?;
    }
    let (gateways, status) = (vec![gateway_url.clone()], status_url.clone());
    switchboard_core::status::provide("presence", move || {
        let j = jitter.summary();
        Some(serde_json::json!({
            "gateways": gateways,
            "status": status,
            "simulated_clients": clients,
            "jitter": {"samples": j.samples, "p50_ms": j.p50_ms, "p99_ms": j.p99_ms, "max_ms": j.max_ms},
        }))
    });
    Ok(vec![
        Endpoint::new("presence", "gateway (gRPC Gateway.Attach, reflection)", gateway_url),
        Endpoint::new(
            "presence",
            format!("status: online users ({clients} simulated clients)"),
            // A command every reader of the table has; grpcurl is not on a fresh machine.
            format!("switchboard presence online --status {status_url}"),
        ),
    ])
}

/// Logs the online count every 10 s, so the demo shows presence working without a gRPC tool.
async fn log_count(status_url: String, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => match status::fetch_online(&status_url).await {
                Ok(n) => tracing::info!(online_users = n, "presence: unique users online in the last 3 minutes"),
                Err(e) => tracing::warn!(error = %switchboard_core::describe_error(&e), "presence: status query failed"),
            },
        }
    }
}
