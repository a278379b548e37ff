//! The status role: consumes reports from the bus, keeps the last-seen window and answers
//! `StatusReader.FetchOnlineUsersInLast3Mins` from it in constant time.
//!
//! Every replica consumes the whole report stream with its own durable consumer
//! (`presence-status-<replica-id>`), so all replicas hold the same window and answer alike;
//! reads scale by adding replicas. A new replica starts reading 3 minutes back, a restarted one
//! from its store snapshot plus whatever the bus redelivers (see [`ingest`]).
mod ingest;
mod snapshot;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_bus::{Bus, ConsumerConfig, DeliverFrom};
use switchboard_core::{Clock, Ctx};
use switchboard_store::Store;

use crate::proto::status_reader_server::{StatusReader, StatusReaderServer};
use crate::proto::{FetchOnlineUsersInLast3MinsRequest, FetchOnlineUsersInLast3MinsResponse};
use crate::report::STREAM;
use crate::tls::ClientTls;
use crate::window::LastSeen;
use crate::{Error, Result};
use ingest::{Ingest, lock};

/// The window the issue asks for: 3 minutes.
pub const WINDOW_SECS: u32 = 180;

/// `switchboard presence status` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// gRPC listen address of StatusReader (port 0 picks a free one).
    #[arg(long = "listen", env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Unique, stable id of this replica: names its durable consumer and its snapshot. Two
    /// live replicas must not share one (they would split the reports between them).
    #[arg(long, env = "SWITCHBOARD_REPLICA_ID", default_value = "status-0")]
    pub replica_id: String,
    /// Time between snapshots to the store; bus messages are acknowledged after each.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,
    /// TLS of the StatusReader listener.
    #[command(flatten)]
    pub tls: switchboard_core::tls::TlsArgs,
    #[command(flatten)]
    pub grpc: switchboard_core::grpc::GrpcArgs,
    /// Open connections at most (lowered, with a warning, to what the process's file limit
    /// leaves); more are closed on accept.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl StatusArgs {
    /// Defaults on an ephemeral loopback port (demo, tests).
    pub fn loopback() -> Self {
        switchboard_core::config::flags(&["--listen", "127.0.0.1:0"])
    }
}

/// Starts a replica on `bus` and `store`, judging the window by `clock`; returns the bound
/// address. Runs on `ctx`; on cancel it stores a final snapshot.
///
/// # Errors
/// Bus, store or bind failures.
pub async fn start(
    args: &StatusArgs,
    bus: Bus,
    store: Store,
    clock: Arc<dyn Clock>,
    ctx: Ctx,
) -> Result<SocketAddr> {
    if args.snapshot_interval.is_zero() || args.replica_id.is_empty() {
        return Err(Error::config("--snapshot-interval must be > 0 and --replica-id non-empty"));
    }
    let tls = crate::tls::server(&args.tls)?;
    ctx.health.register("presence-status-ingest");
    snapshot::migrate(&store).await?;
    let mut window = LastSeen::new(WINDOW_SECS);
    let now = clock.now_ms();
    if let Some(snap) = snapshot::load(&store, &args.replica_id).await? {
        for (user, sec) in &snap.entries {
            window.record(*user, sec.saturating_mul(1000), now);
        }
        tracing::info!(
            users = snap.entries.len(),
            online = window.online(now),
            age_ms = now - snap.taken_ms,
            "window restored from snapshot"
        );
    }
    let window = Arc::new(Mutex::new(window));

    bus.ensure_stream(&crate::report::stream_config()).await?;
    let mut cfg = ConsumerConfig::new(format!("presence-status-{}", args.replica_id));
    // A replica seen for the first time rebuilds the whole window from the stream.
    cfg.deliver_from = DeliverFrom::Time(now - i64::from(WINDOW_SECS) * 1000);
    // Acks come only with snapshots: the bus must wait longer than a few snapshot intervals
    // before redelivering.
    cfg.ack_wait = (args.snapshot_interval * 6).max(Duration::from_secs(30));
    cfg.max_ack_pending = 50_000;
    let consumer = bus.consumer(STREAM, &cfg).await?;
    let ingest = Ingest {
        window: window.clone(),
        clock: clock.clone(),
        store,
        replica: args.replica_id.clone(),
        snapshot_interval: args.snapshot_interval,
        max_pending: 20_000,
        fetch_max: 512,
        health: ctx.health.clone(),
    };
    ctx.spawn(ingest.run(consumer, ctx.shutdown.clone()));

    let (listener, addr) = switchboard_core::admin::bind(args.listen).await?;
    let limits = args.grpc.limits(args.max_connections as usize, "presence-status");
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .layer(switchboard_core::grpc::StreamCountLayer)
        .add_service(StatusReaderServer::new(Reader { window, clock }))
        .add_service(crate::proto::reflection()?)
        .add_service(crate::proto::reflection_v1alpha()?);
    let shutdown = ctx.shutdown.clone();
    let health = ctx.health.clone();
    health.set_ready("presence-status-reader", true);
    ctx.spawn(async move {
        let incoming = switchboard_core::grpc::incoming(listener, limits, "presence-status");
        if let Err(e) =
            server.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
        {
            tracing::error!(error = %switchboard_core::describe_error(&e), "status server failed");
            health.set_ready("presence-status-reader", false);
        }
    });
    Ok(addr)
}

/// `StatusReader`: reads the window under a short lock (a sum of 180 buckets).
struct Reader {
    window: Arc<Mutex<LastSeen>>,
    clock: Arc<dyn Clock>,
}

#[tonic::async_trait]
impl StatusReader for Reader {
    async fn fetch_online_users_in_last3_mins(
        &self,
        _request: tonic::Request<FetchOnlineUsersInLast3MinsRequest>,
    ) -> Result<tonic::Response<FetchOnlineUsersInLast3MinsResponse>, tonic::Status> {
        let online_users = lock(&self.window).online(self.clock.now_ms());
        metrics::counter!("presence_status_queries_total").increment(1);
        Ok(tonic::Response::new(FetchOnlineUsersInLast3MinsResponse { online_users }))
    }
}

/// Asks the status service at `url` (e.g. `http://127.0.0.1:50052`) for the online count.
///
/// # Errors
/// The service is unreachable or answers with an error.
pub async fn fetch_online(url: &str) -> Result<u64> {
    fetch_online_with(url, &ClientTls::default()).await
}

/// [`fetch_online`] over TLS when `url` is `https://`.
///
/// # Errors
/// A bad URL or TLS file, the service is unreachable or answers with an error.
pub async fn fetch_online_with(url: &str, tls: &ClientTls) -> Result<u64> {
    let uri = switchboard_core::url::http("--status", url).map_err(Error::config)?;
    let endpoint = crate::tls::apply(tls, "--status", tonic::transport::Endpoint::from(uri))?;
    let mut client =
        crate::proto::status_reader_client::StatusReaderClient::new(endpoint.connect().await?);
    let res =
        client.fetch_online_users_in_last3_mins(FetchOnlineUsersInLast3MinsRequest {}).await?;
    Ok(res.into_inner().online_users)
}
