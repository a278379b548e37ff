//! The aggregator client: connect, count, report, reconnect.
//!
//! One task owns everything: it connects with a timeout, runs a [`session`](crate::session)
//! until the connection is lost, then waits an exponential, jittered [`Backoff`] and tries
//! again. Windows keep closing on time while disconnected; their reports wait in the bounded
//! outbox and go out after the next reconnect.
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Clock, Ctx};
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::intake::Intake;
use crate::outbox::Outbox;
use crate::protocol::FrameLimits;
use crate::session::{self, End};
use crate::window::{Limits, Schedule};
use crate::{Error, Result};
use switchboard_core::backoff::Backoff;

/// `switchboard aggregator` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Websocket URL of the server to aggregate.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = "ws://127.0.0.1:5050/ws")]
    pub server: String,

    /// Report interval; windows are aligned to multiples of it since the Unix epoch
    /// (60s = wall-clock minutes).
    #[arg(long, env = "SWITCHBOARD_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Message frames (`{…}`) larger than this many bytes are skipped and counted. Association
    /// lists are bounded by --max-children instead.
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 64 << 10)]
    pub max_frame_bytes: usize,

    /// Most children remembered; associations for new children beyond it are rejected. It also
    /// sets the largest association list accepted (128 bytes per child, ~128 MB at 1,000,000).
    #[arg(long, env = "SWITCHBOARD_MAX_CHILDREN", default_value_t = 1_000_000)]
    pub max_children: usize,

    /// Most distinct parents remembered.
    #[arg(long, env = "SWITCHBOARD_MAX_PARENTS", default_value_t = 100_000)]
    pub max_parents: usize,

    /// Most distinct (source, destination) pairs of unknown children held for resolution.
    #[arg(long, env = "SWITCHBOARD_MAX_PENDING_PAIRS", default_value_t = 100_000)]
    pub max_pending_pairs: usize,

    /// Most reports kept while disconnected; the oldest is dropped beyond it.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_REPORTS", default_value_t = 60)]
    pub max_queued_reports: usize,

    /// First reconnect delay (doubles per failure, with jitter).
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MIN", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub backoff_min: Duration,

    /// Longest reconnect delay.
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,

    /// Reconnect when nothing (not even a pong to our pings, sent every third of this)
    /// arrives for this long.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Give up a connection attempt (TCP + TLS + websocket handshake) after this long.
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// TLS for a `wss://` server.
    #[command(flatten)]
    pub tls: switchboard_core::tls::ClientTlsArgs,
}

impl Args {
    /// Default flags pointed at `server`.
    pub fn for_server(server: &str) -> Self {
        switchboard_core::config::flags(&["--server", server])
    }

    fn limits(&self) -> Limits {
        Limits {
            max_children: self.max_children,
            max_parents: self.max_parents,
            max_pending: self.max_pending_pairs,
        }
    }

    fn frame_limits(&self) -> FrameLimits {
        FrameLimits::new(self.max_frame_bytes, self.max_children)
    }
}

/// The websocket layer's caps, derived from the frame limits: anything larger than the largest
/// frame the parser accepts costs the connection (reported as a lost association list).
fn ws_config(limits: FrameLimits) -> WebSocketConfig {
    let cap = limits.websocket_bytes();
    WebSocketConfig::default().max_message_size(Some(cap)).max_frame_size(Some(cap))
}

/// How to dial `server`: plain for `ws://`; for `wss://`, TLS trusting `--tls-ca` only (as
/// every client of the binary does), with a client certificate when `--tls-cert` is set.
fn connector(
    server: &str,
    shown: &str,
    tls: &switchboard_core::tls::ClientTlsArgs,
) -> Result<Connector> {
    let wss = server.starts_with("wss://");
    match tls.client_config().map_err(|e| Error::config(switchboard_core::describe_error(&e)))? {
        Some(config) if wss => Ok(Connector::Rustls(config)),
        None if !wss => Ok(Connector::Plain),
        Some(_) => Err(Error::config(format!("--server {shown}: --tls-ca needs a wss:// URL"))),
        None => Err(Error::config(format!("--server {shown}: wss:// needs --tls-ca"))),
    }
}

/// Runs the aggregator until `ctx.shutdown`, then flushes the open window.
pub(crate) async fn run(args: Args, clock: Arc<dyn Clock>, ctx: Ctx) -> Result<()> {
    if args.interval < Duration::from_millis(10) {
        return Err(Error::config(format!("--interval {:?} is below 10ms", args.interval)));
    }
    // Validate the URL once, up front: a typo is a startup error, not an endless retry.
    switchboard_core::url::websocket("--server", &args.server).map_err(Error::config)?;
    let shown = switchboard_core::redact::url(&args.server);
    args.server
        .as_str()
        .into_client_request()
        .map_err(|e| Error::config(format!("--server {shown}: {e}")))?;
    let connector = connector(&args.server, &shown, &args.tls)?;

    let outbox = Arc::new(Outbox::new(args.max_queued_reports));
    let schedule = Schedule::new(args.interval, clock);
    ctx.health.register("aggregator");
    let mut intake = Intake::new(args.limits(), args.frame_limits(), schedule, outbox.clone())
        .with_health(&ctx.health);
    let ws_config = ws_config(intake.frame_limits());
    let mut backoff = Backoff::new(args.backoff_min, args.backoff_max);
    let connected = metrics::gauge!("aggregator_connected");

    loop {
        let attempt = tokio::time::timeout(
            args.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                args.server.as_str(),
                Some(ws_config),
                true,
                Some(connector.clone()),
            ),
        );
        let outcome = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = ticking(&mut intake, attempt) => r,
        };
        let wait = match outcome {
            Ok(Ok((ws, _))) => {
                tracing::info!(server = %shown, queued = outbox.len(), "connected");
                metrics::counter!("aggregator_connections_total").increment(1);
                connected.set(1.0);
                ctx.health.set_ready("aggregator", true);
                backoff.reset();
                let end = session::run(ws, &mut intake, &ctx.shutdown, args.idle_timeout).await;
                connected.set(0.0);
                ctx.health.set_ready("aggregator", false);
                match end {
                    End::Shutdown => return Ok(()),
                    End::Lost(why) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(reason = %why, retry_in = ?wait, "connection lost");
                        wait
                    }
                }
            }
            Ok(Err(e)) => {
                let wait = backoff.next_delay();
                tracing::warn!(server = %shown, error = %switchboard_core::describe_error(&e), retry_in = ?wait, "connect failed");
                wait
            }
            Err(_) => {
                let wait = backoff.next_delay();
                tracing::warn!(server = %shown, timeout = ?args.connect_timeout, retry_in = ?wait, "connect timed out");
                wait
            }
        };
        metrics::counter!("aggregator_reconnects_total").increment(1);
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            () = ticking(&mut intake, tokio::time::sleep(wait)) => {}
        }
    }
    // Shutdown while disconnected: the open window still becomes a report, but there is no
    // socket to send it on.
    intake.close_now();
    tracing::warn!(unsent = outbox.len(), "shut down while disconnected; queued reports are lost");
    Ok(())
}

/// Awaits `fut` while closing windows on time.
async fn ticking<F: std::future::Future>(intake: &mut Intake, fut: F) -> F::Output {
    tokio::pin!(fut);
    loop {
        let boundary = Instant::now() + intake.until_due();
        tokio::select! {
            out = &mut fut => return out,
            () = tokio::time::sleep_until(boundary) => intake.close_if_due(),
        }
    }
}
