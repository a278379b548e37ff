//! Many simulated clients in one process, for load and demos: each is a real [`Client`] with
//! its own connection (as separate devices would have) or, with `--streams-per-connection`,
//! groups of them multiplexed on one HTTP/2 connection (as behind an L7 gRPC proxy); ramped up
//! at a bounded rate so the gateway's accept queue is not flooded.
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Ctx;

use crate::Result;
use crate::client::{Client, Target};
use crate::jitter::Jitter;

/// `switchboard presence clients` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientsArgs {
    /// How many clients to simulate.
    #[arg(long, env = "SWITCHBOARD_COUNT", default_value_t = 100)]
    pub count: usize,
    /// Where to connect; clients start on the gateways round-robin.
    #[command(flatten)]
    pub target: Target,
    /// New clients per second while ramping up.
    #[arg(long, env = "SWITCHBOARD_RAMP", default_value_t = 2_000)]
    pub ramp: u32,
    /// Clients sharing one HTTP/2 connection per gateway (1: a connection each, as devices;
    /// more: multiplexed streams, as an L7 gRPC proxy forwards them).
    #[arg(long, env = "SWITCHBOARD_STREAMS_PER_CONNECTION", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_connection: u32,
    /// Ping jitter is recorded only after this long (skips the ramp-up).
    #[arg(long, env = "SWITCHBOARD_WARMUP", default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// On exit, print one JSON line with the Ping jitter the clients saw (used by the bench).
    #[arg(long, env = "SWITCHBOARD_STATS_JSON")]
    pub stats_json: bool,
}

impl ClientsArgs {
    /// `count` clients of `gateways`, default ramp, no warm-up, no stats line.
    pub fn new(count: usize, gateways: Vec<String>) -> Self {
        Self {
            count,
            target: Target::new(gateways),
            ramp: 1_000,
            streams_per_connection: 1,
            warmup: Duration::ZERO,
            stats_json: false,
        }
    }
}

/// Runs `args.count` clients until `ctx.shutdown`.
///
/// # Errors
/// A gateway URL is invalid.
pub async fn run(args: ClientsArgs, ctx: Ctx) -> Result<()> {
    let jitter = Arc::new(Jitter::new(Duration::from_secs(1)));
    if !args.warmup.is_zero() {
        jitter.set_recording(false);
        let (j, warmup, stop) = (jitter.clone(), args.warmup, ctx.shutdown.clone());
        ctx.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(warmup) => j.set_recording(true),
            }
        });
    }
    spawn(&args, Some(jitter.clone()), &ctx)?;
    ctx.shutdown.cancelled().await;
    if args.stats_json {
        let s = jitter.summary();
        println!(
            "{{\"clients\":{},\"samples\":{},\"jitter_p50_ms\":{},\"jitter_p99_ms\":{},\"jitter_max_ms\":{}}}",
            args.count, s.samples, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    Ok(())
}

/// Spawns the clients on `ctx` (ramped); returns at once.
///
/// # Errors
/// A gateway URL is invalid.
pub fn spawn(args: &ClientsArgs, jitter: Option<Arc<Jitter>>, ctx: &Ctx) -> Result<()> {
    // Ready once any of them holds a stream: "all started" says nothing about the gateway.
    let proto = Client::new(uuid::Uuid::nil(), &args.target, jitter)?
        .with_health(&ctx.health, "presence-clients");
    let count = args.count;
    let per_connection = args.streams_per_connection.max(1) as usize;
    let pause = Duration::from_secs(1) / args.ramp.max(1);
    let c = ctx.clone();
    ctx.spawn(async move {
        let mut ramp = tokio::time::interval(pause);
        let mut group = proto.clone();
        for i in 0..count {
            tokio::select! {
                () = c.shutdown.cancelled() => return,
                _ = ramp.tick() => {}
            }
            if per_connection > 1 && i % per_connection == 0 {
                group = proto.sharing_connections();
            }
            let client = group.with_id(uuid::Uuid::new_v4());
            let stop = c.shutdown.clone();
            c.spawn(async move { client.run(i, stop).await });
        }
        tracing::info!(count, "all simulated clients started");
    });
    Ok(())
}
