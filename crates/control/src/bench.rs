//! `switchboard bench control`: command round-trip latency through the console path
//! (queue to the agent's stream → agent validates and executes → reply routed back), with
//! one agent and with many agents attached, plus an `all ping` fan-out.
//!
//! The reference, measured in the same run on the same server, is a bare peer that answers
//! every command with a Pong straight from its stream loop — the transport cost without the
//! agent's validation, rate limit and state machine.
use std::time::{Duration, Instant};

use switchboard_core::Ctx;
use switchboard_core::stats::quantile;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::{self, AgentArgs};
use crate::attach::{self, Gate};
use crate::fleet::Fleet;
use crate::op::Op;
use crate::proto::control_client::ControlClient;
use crate::proto::{AgentMessage, Hello, Pong, Reply, agent_message, command, reply};
use crate::{Error, Result};

/// `switchboard bench control` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Agents attached in the large scenario.
    #[arg(long, env = "SWITCHBOARD_AGENTS", default_value_t = 1000)]
    pub agents: usize,

    /// Sequential round trips measured per scenario.
    #[arg(long, env = "SWITCHBOARD_ROUND_TRIPS", default_value_t = 2000)]
    pub round_trips: usize,

    /// `all ping` rounds measured with every agent attached.
    #[arg(long, env = "SWITCHBOARD_BROADCASTS", default_value_t = 20)]
    pub broadcasts: usize,

    /// Give up if the agents have not attached within this time.
    #[arg(long, env = "SWITCHBOARD_ATTACH_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub attach_timeout: Duration,
}

/// Latency summary of one scenario.
struct Summary {
    name: String,
    agents: usize,
    samples: Vec<Duration>,
}

impl Summary {
    fn new(name: impl Into<String>, agents: usize, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { name: name.into(), agents, samples }
    }

    fn percentile_us(&self, p: f64) -> f64 {
        quantile(&self.samples, p / 100.0).as_secs_f64() * 1e6
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "agents": self.agents,
            "samples": self.samples.len(),
            "p50_us": self.percentile_us(50.0).round(),
            "p99_us": self.percentile_us(99.0).round(),
            "max_us": self.percentile_us(100.0).round(),
        })
    }
}

/// Runs the benchmark on loopback, in this process.
pub(crate) async fn run(args: BenchArgs, ctx: Ctx) -> Result<()> {
    let bench = ctx.child();
    let result = measure(&args, &bench).await;
    bench.shutdown.cancel();
    let (summaries, attach_secs) = result?;
    println!("control bench: command round trip, console → agent → console (loopback)\n");
    println!(
        "{:<40} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "scenario", "agents", "samples", "p50 µs", "p99 µs", "max µs"
    );
    for s in &summaries {
        println!(
            "{:<40} {:>7} {:>8} {:>9.0} {:>9.0} {:>9.0}",
            s.name,
            s.agents,
            s.samples.len(),
            s.percentile_us(50.0),
            s.percentile_us(99.0),
            s.percentile_us(100.0)
        );
    }
    println!("\n{} agents attached in {attach_secs:.2}s\n", args.agents);
    let keys = ["reference", "one_agent", "many_agents", "broadcast"];
    let mut json = serde_json::json!({ "bench": "control", "attach_secs": attach_secs });
    for (k, s) in keys.iter().zip(&summaries) {
        json[*k] = s.json();
    }
    println!("{json}");
    Ok(())
}

async fn measure(args: &BenchArgs, ctx: &Ctx) -> Result<(Vec<Summary>, f64)> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let fleet = Fleet::new(1024);
    let gate = Gate {
        token: token.clone(),
        max_agents: args.agents + 8,
        reply_rate: 1e9,
        tls: None,
        idle_timeout: switchboard_core::http::DEFAULT_HEADER_TIMEOUT,
    };
    let addr = attach::serve(([127, 0, 0, 1], 0).into(), gate, fleet.clone(), ctx).await?;
    let url = format!("http://{addr}");
    let n = args.round_trips;

    ctx.spawn(echo_peer(url.clone(), token.clone()));
    attached(&fleet, 1, args.attach_timeout).await?;
    let reference = round_trips(&fleet, &["reference".to_owned()], n).await?;
    fleet.send("reference", &Op::Terminate).map_err(|e| Error::Bench(e.to_string()))?;
    if !fleet.wait_until(|c| c == 0, args.attach_timeout).await {
        return Err(Error::Bench("the reference peer did not detach".into()));
    }

    let first = vec!["agent-0".to_owned()];
    spawn_agent(ctx, &url, &first[0], &token);
    attached(&fleet, 1, args.attach_timeout).await?;
    broadcast(&fleet, &first, &Op::Start).await?;
    let one = round_trips(&fleet, &first, n).await?;

    let started = Instant::now();
    let names: Vec<String> = (0..args.agents.max(1)).map(|i| format!("agent-{i}")).collect();
    for name in &names[1..] {
        spawn_agent(ctx, &url, name, &token);
    }
    attached(&fleet, names.len(), args.attach_timeout).await?;
    let attach_secs = started.elapsed().as_secs_f64();
    broadcast(&fleet, &names, &Op::Start).await?;
    let many = round_trips(&fleet, &names, n).await?;
    let mut fanout = Vec::with_capacity(args.broadcasts);
    for _ in 0..args.broadcasts {
        let t = Instant::now();
        broadcast(&fleet, &names, &Op::Ping).await?;
        fanout.push(t.elapsed());
    }
    let agents = names.len();
    Ok((
        vec![
            Summary::new("reference: bare gRPC echo peer", 1, reference),
            Summary::new("ping, 1 agent", 1, one),
            Summary::new(format!("ping, {agents} agents (round-robin)"), agents, many),
            Summary::new(format!("all ping, {agents} agents (until last reply)"), agents, fanout),
        ],
        attach_secs,
    ))
}

async fn attached(fleet: &Fleet, n: usize, timeout: Duration) -> Result<()> {
    if fleet.wait_for(n, timeout).await {
        Ok(())
    } else {
        Err(Error::Bench(format!("only {} of {n} agents attached within {timeout:?}", fleet.len())))
    }
}

fn spawn_agent(ctx: &Ctx, url: &str, name: &str, token: &str) {
    // The bench measures latency, not the agents' command rate limit: lift it.
    let args = AgentArgs { rate: 1e9, burst: 1_000_000, ..AgentArgs::local(url, name, token) };
    let agent_ctx = ctx.clone();
    ctx.spawn(async move { agent::run(args, agent_ctx).await });
}

/// `n` sequential pings spread over `names`; one latency sample each.
async fn round_trips(fleet: &Fleet, names: &[String], n: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for name in names.iter().cycle().take(n) {
        let t = Instant::now();
        expect_reply(fleet, name, &Op::Ping).await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Sends `op` to every agent at once and waits for every reply.
async fn broadcast(fleet: &Fleet, names: &[String], op: &Op) -> Result<()> {
    let replies = futures::future::join_all(names.iter().map(|n| expect_reply(fleet, n, op))).await;
    replies.into_iter().collect::<Result<Vec<_>>>().map(|_| ())
}

async fn expect_reply(fleet: &Fleet, name: &str, op: &Op) -> Result<Reply> {
    let mut ticket = fleet.send(name, op).map_err(|e| Error::Bench(e.to_string()))?;
    let reply = tokio::time::timeout(Duration::from_secs(10), ticket.replies.recv()).await;
    match reply {
        Ok(Some(r)) if !matches!(r.outcome, Some(reply::Outcome::Refused(_))) => Ok(r),
        Ok(Some(r)) => Err(Error::Bench(format!("{name} refused {}: {r:?}", op.name()))),
        _ => Err(Error::Bench(format!("{name} did not answer {} within 10s", op.name()))),
    }
}

/// The reference peer: attaches as `reference` and answers every command with a Pong from
/// its stream loop, until `terminate`.
async fn echo_peer(url: String, token: String) -> Result<()> {
    let mut client = ControlClient::connect(url).await?;
    let (tx, rx) = mpsc::channel(64);
    let hello = Hello { name: "reference".into(), state: 2, max_in_flight: 1 };
    let _ = tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = format!("Bearer {token}").parse().map_err(|_| Error::Bench("token".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = client
        .attach(request)
        .await
        .map_err(|s| Error::Bench(format!("reference attach: {}", s.message())))?
        .into_inner();
    while let Ok(Some(cmd)) = inbound.message().await {
        if matches!(cmd.op, Some(command::Op::Terminate(_))) {
            break;
        }
        let pong = reply::Outcome::Pong(Pong { unix_time: 0 });
        let r = Reply { id: cmd.id, state: 2, outcome: Some(pong) };
        if tx.send(AgentMessage { kind: Some(agent_message::Kind::Reply(r)) }).await.is_err() {
            break;
        }
    }
    Ok(())
}
