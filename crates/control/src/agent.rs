//! `switchboard control agent`: dials the console, follows the unready/ready state machine,
//! executes the five commands, and reconnects with backoff when the session is lost.
//!
//! The agent — not a session — owns the state machine and the running calculations, so a
//! reconnect neither resets `ready` nor loses results: calculations finishing while no
//! session is up are reported on the next one.
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::Ctx;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::Instrument as _;

use crate::op::Limits;
use crate::proto::Reply;
use crate::rate::RateLimit;
use crate::state::Machine;
use crate::{Error, Result};
use switchboard_core::backoff::Backoff;

use session::SessionEnd;

/// `switchboard control agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// URL of the console server to dial.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,

    /// Name this agent attaches under (unique per console); default `agent-<random>`.
    #[arg(long, env = "SWITCHBOARD_NAME")]
    pub name: Option<String>,

    /// Shared secret presented to the console (prefer the env var: flags show in `ps`).
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub token: String,

    /// Calculations run at once at most; more are refused as busy.
    #[arg(long, env = "SWITCHBOARD_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Largest accepted `calculate` duration, in seconds.
    #[arg(long, env = "SWITCHBOARD_MAX_X", default_value_t = 3600.0, value_parser = crate::op::parse_max_x)]
    pub max_x: f64,

    /// Longest accepted `calculate` message, in bytes (at most 65536, the console's limit);
    /// longer ones are refused as invalid_argument and the session goes on.
    #[arg(long, env = "SWITCHBOARD_MAX_MSG_BYTES", default_value_t = 1024, value_parser = crate::op::parse_max_msg_bytes)]
    pub max_msg_bytes: usize,

    /// Commands executed per second, sustained; above it commands are refused as rate-limited.
    #[arg(long, env = "SWITCHBOARD_RATE", default_value_t = 200.0)]
    pub rate: f64,

    /// Commands executed at once above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_BURST", default_value_t = 400)]
    pub burst: u32,

    /// First reconnect delay (doubles up to --backoff-max, jittered).
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MIN", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub backoff_min: Duration,

    /// Longest reconnect delay.
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,

    #[command(flatten)]
    pub tls: crate::tls::AgentTls,

    /// Timeout of one connection attempt (and of the attach handshake).
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The console sent `terminate`.
    Terminated,
    /// `ctx.shutdown` was cancelled.
    Shutdown,
}

/// Everything that outlives one session.
struct Agent {
    args: AgentArgs,
    name: String,
    limits: Limits,
    /// Where to dial (with TLS if configured), built once at start: bad settings fail at once
    /// instead of being retried forever.
    endpoint: Endpoint,
    /// `Bearer <token>`, checked once at start.
    bearer: MetadataValue<Ascii>,
    machine: Machine,
    rate: RateLimit,
    /// Bounds calculations in flight; a permit lives as long as its calculation.
    slots: Arc<Semaphore>,
    /// Cancelled on terminate/shutdown: stops every running calculation.
    work: CancellationToken,
    calcs: TaskTracker,
    /// Calculation results, held here while no session is up. Capacity `max_in_flight`:
    /// each calculation sends exactly one result while holding a permit, so sends never wait.
    results_tx: mpsc::Sender<Reply>,
    results_rx: mpsc::Receiver<Reply>,
}

/// Runs an agent until `terminate` or shutdown.
///
/// # Errors
/// The flags are invalid, or the console refuses our token (retrying cannot help).
pub async fn run(args: AgentArgs, ctx: Ctx) -> Result<Exit> {
    // Re-checked for callers that build the flags in code (demo, bench); clap already
    // refuses these on the command line (exit 64).
    if args.max_in_flight == 0 || !(0.0..=crate::op::MAX_X_CEILING).contains(&args.max_x) {
        return Err(Error::config("--max-in-flight must be > 0 and --max-x finite, ≥ 0"));
    }
    let name = match &args.name {
        Some(n) => crate::attach::check_name(n).map_err(Error::config)?.to_owned(),
        None => format!("agent-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let cap = usize::try_from(args.max_in_flight).unwrap_or(usize::MAX);
    let (results_tx, results_rx) = mpsc::channel(cap);
    let mut agent = Agent {
        endpoint: endpoint(&args).await?,
        bearer: MetadataValue::try_from(format!("Bearer {}", args.token))
            .map_err(|_| Error::config("--token must be printable ASCII"))?,
        limits: Limits { max_x: args.max_x, max_msg_bytes: args.max_msg_bytes },
        machine: Machine::default(),
        rate: RateLimit::new(args.rate, args.burst, Instant::now()),
        slots: Arc::new(Semaphore::new(cap)),
        work: ctx.shutdown.child_token(),
        calcs: TaskTracker::new(),
        results_tx,
        results_rx,
        name,
        args,
    };
    let mut backoff = Backoff::new(agent.args.backoff_min, agent.args.backoff_max);
    let health_key = format!("control-agent-{}", agent.name);
    ctx.health.register(&health_key);
    let span = tracing::info_span!("control_agent", agent = %agent.name);
    loop {
        match agent.session(&ctx, &health_key).instrument(span.clone()).await {
            Ok(SessionEnd::Terminated) => return Ok(Exit::Terminated),
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost(reason)) => {
                // The session worked; start the next wait from the minimum again.
                backoff.reset();
                tracing::warn!(agent = %agent.name, %reason, "session lost; reconnecting");
            }
            Ok(SessionEnd::Refused(reason)) => {
                tracing::warn!(agent = %agent.name, %reason, "attach refused; retrying");
            }
            Err(Error::Unauthenticated(m)) => {
                agent.stop_work().await;
                return Err(Error::Unauthenticated(m));
            }
            Err(e) => tracing::warn!(
                agent = %agent.name,
                server = %agent.args.server,
                error = %switchboard_core::describe_error(&e),
                "cannot attach to the console; retrying (is it running at that address?)"
            ),
        }
        ctx.health.set_ready(&health_key, false);
        metrics::counter!("control_agent_reconnects_total").increment(1);
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = ctx.shutdown.cancelled() => break,
        }
    }
    agent.stop_work().await;
    Ok(Exit::Shutdown)
}

/// The console endpoint described by the flags.
async fn endpoint(args: &AgentArgs) -> Result<Endpoint> {
    let uri = switchboard_core::url::http("--server", &args.server).map_err(Error::config)?;
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(args.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(tls) = args.tls.load().await? {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint)
}

impl Agent {
    /// Cancels every calculation and waits for them to report.
    async fn stop_work(&mut self) {
        self.work.cancel();
        self.calcs.close();
        self.calcs.wait().await;
    }
}

impl AgentArgs {
    /// Default settings for an in-process agent (demo, bench) dialing `server`.
    pub(crate) fn local(server: &str, name: &str, token: &str) -> Self {
        // Quicker reconnects than a remote agent's: the console is on the same machine.
        switchboard_core::config::flags(&[
            "--server",
            server,
            "--name",
            name,
            "--token",
            token,
            "--backoff-min",
            "100ms",
            "--backoff-max",
            "5s",
        ])
    }
}
