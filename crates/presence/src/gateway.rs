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
mod forwarder;
mod session;
mod ticker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Clock, Ctx, SystemClock};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument as _;

use crate::auth::{CLIENT_TOKEN_HEADER, ClientAuth};
use crate::proto::Pong;
use crate::proto::gateway_server::{Gateway, GatewayServer};
use crate::{Error, Result};
use forwarder::{Forwarder, ReportSender};
use session::{PingStream, Session, SessionMetrics};
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
    /// Phases the ping interval is split into, to spread writes over the second (1,000: a
    /// slot every millisecond, 18 of 18,000 clients at a time; 20 slots gave waves of 900 and
    /// 2-5x the ping jitter p99 in `switchboard bench presence`).
    #[arg(long, env = "SWITCHBOARD_PING_SLOTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
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
    let tls = crate::tls::server(&args.tls)?;
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
    let service = GatewayService {
        ticker,
        reports: report_tx,
        clock: Arc::new(SystemClock),
        timeout: args.client_timeout,
        slots: slots.clone(),
        auth,
        metrics: Arc::new(SessionMetrics::new()),
        ctx: ctx.clone(),
    };
    let reflection = crate::proto::reflection()?;
    let window = args.stream_window.max(1024);
    let max_streams =
        u32::try_from(args.max_clients.saturating_add(STREAM_HEADROOM)).unwrap_or(u32::MAX);
    // One connection per client at most (fewer when an L7 proxy multiplexes), plus spares for
    // callers of reflection and for clients reconnecting while their old socket closes.
    let limits =
        args.grpc.limits(args.max_clients.saturating_add(SPARE_CONNECTIONS), "presence-gateway");
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .initial_stream_window_size(window)
        .initial_connection_window_size(CONNECTION_WINDOW.max(window))
        .max_concurrent_streams(max_streams)
        .tcp_nodelay(true)
        // Dead peers whose TCP never errors (a pulled cable) are found by HTTP/2 PINGs.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(switchboard_core::grpc::StreamCountLayer)
        .add_service(GatewayServer::new(service))
        .add_service(reflection)
        .add_service(crate::proto::reflection_v1alpha()?);
    let incoming = switchboard_core::grpc::incoming(listener, limits, "presence-gateway");
    let shutdown = ctx.shutdown.clone();
    let health = ctx.health.clone();
    health.set_ready("presence-gateway", true);
    ctx.spawn(
        async move {
            if let Err(e) =
                server.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
            {
                tracing::error!(error = %switchboard_core::describe_error(&e), "gateway server failed");
                health.set_ready("presence-gateway", false);
            }
        }
        .instrument(tracing::info_span!("presence.gateway", gateway = %gateway_id)),
    );
    Ok(Running { addr, slots, max_clients: args.max_clients })
}

/// The `Gateway` gRPC service.
struct GatewayService {
    ticker: Arc<Ticker>,
    reports: ReportSender,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    /// With `--client-auth-key`: the check of each client's token.
    auth: Option<ClientAuth>,
    metrics: Arc<SessionMetrics>,
    ctx: Ctx,
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    type AttachStream = PingStream;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<Pong>>,
    ) -> Result<tonic::Response<PingStream>, tonic::Status> {
        let client = client_id(request.metadata())?;
        if let Some(auth) = &self.auth {
            let token = request.metadata().get(CLIENT_TOKEN_HEADER).and_then(|t| t.to_str().ok());
            if !token.is_some_and(|t| auth.verify(uuid::Uuid::from_u128(client), t)) {
                metrics::counter!("presence_gateway_unauthenticated_total").increment(1);
                return Err(tonic::Status::unauthenticated(
                    "missing or wrong `client-token` for this `client-id`",
                ));
            }
        }
        if self.ctx.shutdown.is_cancelled() {
            return Err(tonic::Status::unavailable("gateway draining; reconnect"));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("presence_gateway_refused_total").increment(1);
            tracing::warn!("max-clients reached: refusing a client stream");
            return Err(tonic::Status::resource_exhausted("gateway full; try another gateway"));
        };
        let span = tracing::info_span!("presence.gateway.session", client_id = %uuid::Uuid::from_u128(client));
        crate::trace::set_parent_from_metadata(&span, request.metadata());
        let session = Session {
            client,
            tick: self.ticker.subscribe(client),
            inbound: request.into_inner(),
            reports: self.reports.clone(),
            clock: self.clock.clone(),
            timeout: self.timeout,
            shutdown: self.ctx.shutdown.clone(),
            metrics: self.metrics.clone(),
        };
        Ok(tonic::Response::new(session.into_stream(permit, span)))
    }
}

/// The client's UUID from the `client-id` metadata.
fn client_id(md: &tonic::metadata::MetadataMap) -> Result<u128, tonic::Status> {
    let raw = md
        .get(CLIENT_ID_HEADER)
        .ok_or_else(|| tonic::Status::invalid_argument("missing `client-id` metadata (a UUID)"))?;
    raw.to_str()
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
        .map(|u| u.as_u128())
        .ok_or_else(|| tonic::Status::invalid_argument("`client-id` metadata must be a UUID"))
}
