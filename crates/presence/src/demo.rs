//! Presence in one process: status replica, gateway and simulated clients on a shared bus and
//! store. Used by `switchboard demo` and by `switchboard presence all` (embedded mode).
use std::sync::Arc;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, Endpoint, SystemClock};
use switchboard_store::Store;

use crate::Result;
use crate::clients::{self, ClientsArgs};
use crate::gateway::{self, GatewayArgs};
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
    if clients > 0 {
        let args = ClientsArgs::new(clients, vec![gateway_url.clone()]);
        clients::spawn(&args, None, ctx)?;
    }
    Ok(vec![
        Endpoint::new("presence", "gateway (gRPC Gateway.Attach, reflection)", gateway_url),
        Endpoint::new(
            "presence",
            format!("status: online users ({clients} simulated clients)"),
            format!(
                "grpcurl -plaintext {status_addr} tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins"
            ),
        ),
    ])
}
