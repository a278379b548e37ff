//! The jobproxy part of `switchboard demo`: a job-server simulator and a proxy in front of it,
//! both on ephemeral loopback ports, stopping with the demo.
use std::time::Duration;

use switchboard_core::{Ctx, Endpoint};
use tokio_util::sync::CancellationToken;

use crate::jobserver::{JobServer, JobServerArgs};
use crate::{Args, ProxyHandle, Result, proxy};

/// Starts the simulator and the proxy; returns their endpoints.
///
/// # Errors
/// A component fails to start.
pub(crate) async fn start(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    let (server, proxy) = launch(ctx).await?;
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

async fn launch(ctx: &Ctx) -> Result<(JobServer, ProxyHandle)> {
    // The simulator stops only after the proxy has drained: it must keep sending the callbacks
    // of jobs already started, or held requests would wait for nothing until the drain timeout.
    let sim_ctx = Ctx { shutdown: CancellationToken::new(), ..ctx.clone() };
    let sim_shutdown = sim_ctx.shutdown.clone();
    let server = JobServer::start(JobServerArgs::loopback(Duration::from_millis(500)), &sim_ctx)
        .await
        .inspect_err(|_| sim_shutdown.cancel())?;
    let upstream = format!("http://{}", server.addr());
    let args: Args =
        switchboard_core::config::flags(&["--listen", "127.0.0.1:0", "--upstream", &upstream]);
    let proxy = proxy::start(args, switchboard_bus::Bus::memory(), ctx)
        .await
        .inspect_err(|_| sim_shutdown.cancel())?;
    let stopped = proxy.clone();
    ctx.spawn(async move {
        stopped.stopped().await;
        sim_shutdown.cancel();
    });
    Ok((server, proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_simulator_outlives_the_proxy_drain() {
        let ctx = Ctx::new();
        let (_server, proxy) = launch(&ctx).await.unwrap();
        let url = format!("http://{}/", proxy.addr);
        let held = tokio::spawn(async move {
            let body = serde_json::json!({"account": "a", "wait": true});
            let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        });
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        while proxy.held() == 0 {
            assert!(tokio::time::Instant::now() < end, "the job was never held");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The demo job takes 500 ms: its callback must still come after shutdown began.
        ctx.shutdown.cancel();
        let (status, body) = held.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("completed"), "{body}");
        assert!(ctx.drain(Duration::from_secs(5)).await, "everything stops after the drain");
    }
}
