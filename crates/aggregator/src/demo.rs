//! `switchboard demo`'s aggregator: the simulator and the client in one process, with a short
//! window so a checked report shows within seconds.
use std::sync::Arc;

use switchboard_core::{Ctx, Endpoint, SystemClock};

use crate::wsserver::{self, WsServerArgs};
use crate::{Args, Result, client};

/// The demo's window: short, so a newcomer sees a checked report within seconds.
const DEMO_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the simulator and the aggregator on loopback; returns what runs where.
///
/// # Errors
/// A component fails to start.
pub(crate) async fn start(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    let sim = WsServerArgs::demo(DEMO_INTERVAL);
    let (listener, addr) = wsserver::bind(&sim).await?;
    let url = format!("ws://{addr}/ws");
    // The simulator outlives the client: it stops only once the client has sent its
    // shutdown flush, so the last report is received and checked too.
    let sim_ctx = Ctx { shutdown: tokio_util::sync::CancellationToken::new(), ..ctx.child() };
    let stop_sim = sim_ctx.shutdown.clone();
    ctx.spawn(async move {
        if let Err(e) = wsserver::serve(listener, sim, sim_ctx).await {
            tracing::error!(error = %switchboard_core::describe_error(&e), "wsserver simulator stopped");
        }
    });
    let mut args = Args::for_server(&url);
    args.interval = DEMO_INTERVAL;
    let client_ctx = ctx.child();
    ctx.spawn(async move {
        if let Err(e) = client::run(args, Arc::new(SystemClock), client_ctx).await {
            tracing::error!(error = %switchboard_core::describe_error(&e), "aggregator stopped");
        }
        stop_sim.cancel();
    });
    Ok(vec![
        Endpoint::new("aggregator", "wsserver simulator (checks every report)", url),
        Endpoint::new(
            "aggregator",
            "client: a report every 10 s",
            "printed below once the simulator has checked it",
        ),
    ])
}
