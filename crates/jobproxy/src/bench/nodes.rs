//! The multi-node phase: three proxy processes on one NATS server behind one round-robin
//! address, which is also the callback URL the job server is given, so callbacks that land
//! on a node that does not hold their request are forwarded over the bus.
use std::time::Duration;

use super::child::{RoleProcess, free_addr};
use crate::round_robin::RoundRobin;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
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
    let balancer = RoundRobin::serve(listener, procs.iter().map(|p| p.addr).collect())?;
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
    balancer.stop().await;
    for p in procs {
        p.stop().await;
    }
    r.bursts.sort();
    result.map(|()| r)
}
