//! The multi-node phase: three proxy processes on one NATS server behind one round-robin
//! address, which is also the callback URL the job server is given, so callbacks that land
//! on a node that does not hold their request are forwarded over the bus.
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::child::{RoleProcess, free_addr};
use crate::{Result, jobclient};

/// What the phase measured.
#[derive(Debug, Default)]
pub(crate) struct NodesReport {
    pub nodes: usize,
    /// One burst's time per round, sorted.
    pub bursts: Vec<Duration>,
    pub failures: usize,
    /// Callbacks forwarded to the node holding their request, over all nodes.
    pub forwarded: f64,
}

/// Runs `rounds` bursts of `jobs` through `nodes` proxies on `nats` behind one address.
pub(crate) async fn run(
    upstream: &str,
    nats: &str,
    nodes: usize,
    jobs: usize,
    rounds: usize,
) -> Result<NodesReport> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let front = format!("http://{}", listener.local_addr()?);
    let mut procs = Vec::with_capacity(nodes);
    for id in 1..=nodes {
        let extra = [
            "--bus",
            nats,
            "--node-id",
            &id.to_string(),
            "--public-url",
            &front,
            // The job server serves an account on one connection at a time: nodes sharing
            // the burst's account take turns, so each lets its link go soon after its starts.
            "--upstream-idle",
            "20ms",
        ]
        .map(str::to_owned);
        procs.push(RoleProcess::proxy_on(free_addr()?, upstream, jobs * 4, &extra).await?);
    }
    let stop = CancellationToken::new();
    let backends: Vec<_> = procs.iter().map(|p| p.addr).collect();
    let balancer = tokio::spawn(round_robin(listener, backends, stop.clone()));
    let mut r = NodesReport { nodes, ..NodesReport::default() };
    let result = async {
        for _ in 0..rounds.max(1) {
            let round =
                jobclient::fire(&format!("{front}/"), "burst", jobs, Duration::from_secs(5), || {})
                    .await?;
            r.failures += round.jobs - round.succeeded;
            r.bursts.push(round.total);
        }
        for p in &procs {
            r.forwarded +=
                p.counter("jobproxy_callbacks_forwarded_total", "outcome=\"forwarded\"").await?;
        }
        Ok(())
    }
    .await;
    stop.cancel();
    let _ = balancer.await;
    for p in procs {
        p.stop().await;
    }
    r.bursts.sort();
    result.map(|()| r)
}

/// A round-robin TCP balancer: each accepted connection is piped to the next backend.
async fn round_robin(
    listener: TcpListener,
    backends: Vec<std::net::SocketAddr>,
    stop: CancellationToken,
) {
    let pipes = tokio_util::task::TaskTracker::new();
    for next in 0.. {
        let mut client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            () = stop.cancelled() => break,
        };
        let backend = backends[next % backends.len()];
        let stop = stop.clone();
        pipes.spawn(async move {
            if let Ok(mut backend) = TcpStream::connect(backend).await {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                    () = stop.cancelled() => {}
                }
            }
        });
    }
    pipes.close();
    pipes.wait().await;
}
