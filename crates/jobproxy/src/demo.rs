//! The jobproxy part of `switchboard demo`: a job-server simulator and a proxy in front of it,
//! both on ephemeral loopback ports, stopping with the demo.
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use switchboard_core::{Ctx, Endpoint};

use crate::jobserver::{JobServer, JobServerArgs};
use crate::{Args, Result, proxy};

// The proxy's flag defaults, checked at compile time.
const MAX_HELD: NonZeroUsize = NonZeroUsize::new(20_000).unwrap();
const ACCOUNT_QUEUE: NonZeroUsize = NonZeroUsize::new(4_096).unwrap();
const MAX_LINKS: NonZeroUsize = NonZeroUsize::new(1_024).unwrap();

/// Starts the simulator and the proxy; returns their endpoints.
///
/// # Errors
/// A component fails to start.
pub(crate) async fn start(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    let server = JobServer::start(JobServerArgs::loopback(Duration::from_millis(500)), ctx).await?;
    let proxy = proxy::start(
        Args {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: format!("http://{}", server.addr()),
            public_url: None,
            deadline: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(5),
            max_held: MAX_HELD,
            account_queue: ACCOUNT_QUEUE,
            max_links: MAX_LINKS,
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
