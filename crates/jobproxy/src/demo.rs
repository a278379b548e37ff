//! The jobproxy part of `switchboard demo`: a job-server simulator and a proxy in front of it,
//! both on ephemeral loopback ports, stopping with the demo.
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchboard_core::{Ctx, Endpoint};

use crate::jobserver::{Faults, JobServer, JobServerArgs};
use crate::{Args, Result, proxy};

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Starts the simulator and the proxy; returns their endpoints.
///
/// # Errors
/// A component fails to start.
pub(crate) async fn start(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    let server = JobServer::start(
        JobServerArgs {
            listen: LOOPBACK,
            job_time: Duration::from_millis(500),
            latency: Duration::ZERO,
            callback_attempts: 5,
            callback_backoff: Duration::from_millis(100),
            callback_timeout: Duration::from_secs(5),
            callback_concurrency: 256,
            max_jobs: 100_000,
            faults: Faults::default(),
        },
        ctx,
    )
    .await?;
    let proxy = proxy::start(
        Args {
            listen: LOOPBACK,
            upstream: format!("http://{}", server.addr()),
            public_url: None,
            deadline: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(5),
            max_held: 20_000,
            account_queue: 4_096,
            upstream_idle: Duration::from_secs(2),
            max_body: 65_536,
        },
        ctx,
    )
    .await?;
    let url = format!("http://{}", proxy.addr);
    Ok(vec![
        Endpoint::new(
            "jobproxy",
            "job server simulator",
            format!("http://{}/start", server.addr()),
        ),
        Endpoint::new("jobproxy", "proxy (POST {\"account\",\"wait\":true})", url.clone()),
        Endpoint::new("jobproxy", "try it", format!("switchboard jobclient --url {url}")),
    ])
}
