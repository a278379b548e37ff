//! The gateway role: holds many persistent client streams, pings each client every second,
//! forwards EVEN/ODD reports to the status service over the bus. Stateless — any number of
//! gateways can run behind a TCP/HTTP-2 load balancer.
//!
//! Memory per client is what decides how many clients one process holds, so the HTTP/2 server
//! is tuned for many idle-ish streams: small per-stream flow-control windows (a Ping is 5 bytes),
//! one task per stream, no per-stream timer. It serves both shapes clients come in: one
//! connection per device, and a few connections each carrying thousands of streams (behind an L7
//! gRPC proxy). `--max-clients` is the only cap on streams, and reaching it is a clear
//! RESOURCE_EXHAUSTED, never a stream queued by HTTP/2 flow control.
mod bridge;
#[cfg(test)]
mod conformance;
mod conn;
mod forwarder;
mod session;
mod ticker;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Ctx, SystemClock};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt as _;
use tracing::Instrument as _;

use crate::auth::ClientAuth;
use crate::{Error, Result};
use forwarder::Forwarder;
use session::{SessionMetrics, Sessions};
use ticker::Ticker;

/// Metadata key carrying the client's UUID on `Attach`.
pub const CLIENT_ID_HEADER: &str = "client-id";

/// HTTP/2 receive window of a whole connection, bytes. It is credit, not a buffer (h2 allocates
/// nothing for it), so it costs a one-stream connection nothing; it must cover one ping round of
/// every stream a multiplexed connection carries (a Pong is ~15 bytes on the wire), or those
/// streams wait for WINDOW_UPDATEs and their Pongs arrive late.
pub(crate) const CONNECTION_WINDOW: u32 = 1 << 20;

/// Streams a connection may open beyond `--max-clients`: reflection and health calls, and the
/// stream past the limit, which must reach the gateway to be refused with RESOURCE_EXHAUSTED
/// instead of waiting in the peer's queue for a free HTTP/2 stream slot.
const STREAM_HEADROOM: usize = 16;

/// Connections beyond `--max-clients` (reflection callers, clients reconnecting while their old
/// socket closes).
const SPARE_CONNECTIONS: usize = 1024;

/// `switchboard presence gateway` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// gRPC listen address for client streams (port 0 picks a free one).
    #[arg(long = "listen", env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// This gateway's id in logs and batch ids (default: random).
    #[arg(long, env = "SWITCHBOARD_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Interval between two Pings to a client.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// A client that sends no Pong for this long is disconnected.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,
    /// Most client streams held at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SWITCHBOARD_MAX_CLIENTS", default_value_t = 100_000)]
    pub max_clients: usize,
    /// Most reports per bus message.
    #[arg(long, env = "SWITCHBOARD_BATCH_MAX", default_value_t = 2_000)]
    pub batch_max: usize,
    /// Longest a report waits before its batch is published.
    #[arg(long, env = "SWITCHBOARD_BATCH_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub batch_interval: Duration,
    /// Reports queued for the bus before new ones are shed.
    #[arg(long, env = "SWITCHBOARD_REPORT_QUEUE", default_value_t = 65_536)]
    pub report_queue: usize,
    /// HTTP/2 flow-control window per stream, bytes (Pings and Pongs are a few bytes).
    #[arg(long, env = "SWITCHBOARD_STREAM_WINDOW", default_value_t = 4_096)]
    pub stream_window: u32,
    /// Phases the ping interval is split into, to spread writes over the second (100: a slot
    /// every 10 ms, 180 of 18,000 clients at a time). Each slot wakes the runtime's threads:
    /// 1,000 slots cost 1.7x the CPU for the same jitter p99 in `switchboard bench presence`;
    /// 20 slots (waves of 900) gave 2-5x the jitter p99.
    #[arg(long, env = "SWITCHBOARD_PING_SLOTS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ping_slots: u32,
    /// Admit only clients whose `client-token` metadata is HMAC-SHA256(this key, client-id)
    /// (mint one with `switchboard presence token`); at least 16 bytes. Prefer the env var:
    /// flags show in `ps`.
    #[arg(long, env = "SWITCHBOARD_CLIENT_AUTH_KEY", hide_env_values = true)]
    pub client_auth_key: Option<String>,
    /// TLS of the gRPC listener.
    #[command(flatten)]
    pub tls: switchboard_core::tls::TlsArgs,
    #[command(flatten)]
    pub grpc: switchboard_core::grpc::GrpcArgs,
}

impl GatewayArgs {
    /// Defaults on an ephemeral loopback port (demo, tests).
    pub fn loopback() -> Self {
        switchboard_core::config::flags(&["--listen", "127.0.0.1:0"])
    }
}

/// A started gateway.
#[derive(Debug, Clone)]
pub struct Running {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    slots: Arc<Semaphore>,
    max_clients: usize,
}

impl Running {
    /// Client streams held right now.
    pub fn sessions(&self) -> usize {
        self.max_clients - self.slots.available_permits()
    }
}

/// Binds and starts a gateway publishing on `bus`. Everything runs on `ctx` and stops (draining
/// sessions and the last batch) when it is cancelled.
///
/// # Errors
/// The address cannot be bound, or the configuration is unusable.
pub async fn start(args: GatewayArgs, bus: Bus, ctx: Ctx) -> Result<Running> {
    if args.batch_max == 0 || args.report_queue == 0 || args.ping_interval.is_zero() {
        return Err(Error::config("--batch-max, --report-queue and --ping-interval must be > 0"));
    }
    let auth = args.client_auth_key.as_deref().map(ClientAuth::new).transpose()?;
    let tls = crate::tls::gateway(&args.tls)?.map(tokio_rustls::TlsAcceptor::from);
    bus.ensure_stream(&crate::report::stream_config()).await?;
    let (listener, addr) = switchboard_core::admin::bind(args.listen).await?;
    let gateway_id = args.gateway_id.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("gw-{}", &id[..8])
    });

    let (report_tx, report_rx) = mpsc::channel(args.report_queue);
    let forwarder = Forwarder {
        gateway_id: gateway_id.clone(),
        bus,
        batch_max: args.batch_max,
        batch_interval: args.batch_interval,
    };
    ctx.spawn(forwarder.run(report_rx, ctx.shutdown.clone()));

    let ticker =
        Arc::new(Ticker::new(args.ping_interval, usize::try_from(args.ping_slots).unwrap_or(1)));
    let t = ticker.clone();
    let stop = ctx.shutdown.clone();
    ctx.spawn(async move { t.run(stop).await });

    let slots = Arc::new(Semaphore::new(args.max_clients));
    let sessions = Sessions {
        reports: report_tx,
        clock: Arc::new(SystemClock),
        timeout: args.client_timeout,
        slots: slots.clone(),
        auth,
        shutdown: ctx.shutdown.clone(),
        metrics: Arc::new(SessionMetrics::new()),
    };
    let routes = tonic::service::Routes::new(crate::proto::reflection()?)
        .add_service(crate::proto::reflection_v1alpha()?)
        .prepare();
    let server = Arc::new(conn::Server {
        sessions,
        routes,
        ticker,
        max_streams: u32::try_from(args.max_clients.saturating_add(STREAM_HEADROOM))
            .unwrap_or(u32::MAX),
        stream_window: args.stream_window.max(1024),
        connection_window: CONNECTION_WINDOW.max(args.stream_window),
        idle_timeout: args.grpc.idle_timeout,
        shutdown: ctx.shutdown.clone(),
        closed_idle: metrics::counter!("grpc_connections_idle_closed_total", "server" => SERVER),
        protocol_errors: metrics::counter!("presence_gateway_protocol_errors_total"),
    });
    // One connection per client at most (fewer when an L7 proxy multiplexes), plus spares for
    // callers of reflection and for clients reconnecting while their old socket closes.
    let accepted = switchboard_core::grpc::accept_limited(
        listener,
        args.max_clients.saturating_add(SPARE_CONNECTIONS),
        SERVER,
    );
    let health = ctx.health.clone();
    health.set_ready(SERVER, true);
    ctx.spawn(
        accept(accepted, server, tls, ctx.clone())
            .instrument(tracing::info_span!("presence.gateway", gateway = %gateway_id)),
    );
    Ok(Running { addr, slots, max_clients: args.max_clients })
}

/// Name of the listener in metrics and readiness.
const SERVER: &str = "presence-gateway";

/// Accepts connections until shutdown; each is served by its own task.
async fn accept(
    accepted: impl tokio_stream::Stream<
        Item = std::io::Result<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)>,
    >,
    server: Arc<conn::Server>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Ctx,
) {
    let mut accepted = std::pin::pin!(accepted);
    let mut seq = 0u64;
    loop {
        let next = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            next = accepted.next() => next,
        };
        let (tcp, permit) = match next {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                // Out of file descriptors, typically: keep accepting once some close.
                tracing::warn!(error = %switchboard_core::describe_error(&e), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => return,
        };
        seq += 1;
        let server = server.clone();
        let tls = tls.clone();
        let handshake = server.idle_timeout;
        ctx.spawn(async move {
            let _permit = permit;
            match tls {
                None => conn::serve(tcp, server, seq).await,
                // Boxed: a TLS session is kilobytes, and inline it would make every plaintext
                // connection's task as large.
                Some(tls) => {
                    Box::pin(async move {
                        match tokio::time::timeout(handshake, tls.accept(tcp)).await {
                            Ok(Ok(stream)) => conn::serve(stream, server, seq).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        });
    }
}
