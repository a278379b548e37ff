//! The roles of `switchboard presence …`: their flags and how each one starts.
use std::sync::Arc;
use switchboard_bus::Bus;

use switchboard_core::{Ctx, SystemClock};
use switchboard_store::Store;

use crate::auth::ClientAuth;
use crate::client::{self, ClientArgs};
use crate::clients::{self, ClientsArgs};
use crate::gateway::{self, GatewayArgs};
use crate::status::{self, StatusArgs};
use crate::tls::ClientTls;
use crate::{Result, demo};

/// Roles of this service. A role's settings (`GatewayArgs`, `StatusArgs`) hold no URL of a
/// shared dependency: the bus and the store are named here, connected once in [`run`], and
/// handed to the role's `start`, as the demo and the tests hand in theirs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// gRPC gateway holding client streams; forwards reports over the bus.
    Gateway {
        #[command(flatten)]
        settings: GatewayArgs,
        /// Bus URL: `memory://` (only status services in this process see reports) or
        /// `nats://…`.
        #[arg(long, env = "SWITCHBOARD_BUS", default_value = "memory://")]
        bus: String,
    },
    /// Status service: consumes reports, answers StatusReader.
    Status {
        #[command(flatten)]
        settings: StatusArgs,
        #[command(flatten)]
        backends: Backends,
    },
    /// Embedded mode: a status replica and a gateway in one process (memory bus by default).
    All(AllArgs),
    /// One client.
    Client(ClientArgs),
    /// Many simulated clients in one process.
    Clients(ClientsArgs),
    /// Asks a status service for the online count and prints it (StatusReader, one call).
    Online(OnlineArgs),
    /// Prints the `client-token` of a client id under a gateway's --client-auth-key.
    Token(TokenArgs),
}

/// `switchboard presence token` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The gateways' --client-auth-key.
    #[arg(long, env = "SWITCHBOARD_CLIENT_AUTH_KEY", hide_env_values = true)]
    pub client_auth_key: String,
    /// The client id the token is for.
    #[arg(long, env = "SWITCHBOARD_ID")]
    pub id: uuid::Uuid,
}

/// `switchboard presence online` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct OnlineArgs {
    /// StatusReader URL of a status service.
    #[arg(long, env = "SWITCHBOARD_STATUS", default_value = "http://127.0.0.1:50052")]
    pub status: String,
    /// TLS for an `https://` status service.
    #[command(flatten)]
    pub tls: ClientTls,
}

/// The bus and the store of a status replica (or of `presence all`).
#[derive(Debug, Clone, clap::Args)]
pub struct Backends {
    /// Bus URL: `memory://` (reports from gateways in this process only) or `nats://…`.
    #[arg(long, env = "SWITCHBOARD_BUS", default_value = "memory://")]
    pub bus: String,
    /// Store URL for snapshots: `sqlite://…` or `postgres://…`.
    #[arg(long, env = "SWITCHBOARD_STORE", default_value = "sqlite://./data/presence.db")]
    pub store: String,
}

/// `switchboard presence all` flags: the gateway's and the status service's.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    /// gRPC address of the gateway.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub gateway_listen: std::net::SocketAddr,
    /// gRPC address of StatusReader.
    #[arg(long, env = "SWITCHBOARD_STATUS_LISTEN", default_value = "127.0.0.1:50052")]
    pub status_listen: std::net::SocketAddr,
    /// The bus both share and the status service's store.
    #[command(flatten)]
    pub backends: Backends,
    /// Simulated clients to run in the same process (0: none).
    #[arg(long, env = "SWITCHBOARD_CLIENTS", default_value_t = 0)]
    pub clients: usize,
    /// Idle timeout of both gRPC listeners.
    #[command(flatten)]
    pub grpc: switchboard_core::grpc::GrpcArgs,
}

/// Runs one role until `ctx.shutdown`.
///
/// # Errors
/// Startup fails (bus, store, bind, bad flags).
pub async fn run(cmd: Command, ctx: Ctx) -> Result<()> {
    match cmd {
        Command::Gateway { settings, bus } => {
            let bus = Bus::connect(&bus).await?;
            if bus.is_process_local() {
                tracing::warn!(
                    "gateway on the memory bus: only a status service in this process sees its reports (use `presence all` or --bus nats://…)"
                );
            }
            let gateway = gateway::start(settings, bus, ctx.clone()).await?;
            tracing::info!(addr = %gateway.addr, "presence gateway listening");
            ctx.shutdown.cancelled().await;
            Ok(())
        }
        Command::Status { settings, backends } => {
            let bus = Bus::connect(&backends.bus).await?;
            let store = Store::connect(&backends.store).await?;
            let clock = Arc::new(SystemClock);
            let addr = status::start(&settings, bus, store, clock, ctx.clone()).await?;
            tracing::info!(%addr, replica = %settings.replica_id, "presence status listening");
            ctx.shutdown.cancelled().await;
            Ok(())
        }
        Command::All(args) => {
            let bus = Bus::connect(&args.backends.bus).await?;
            let store = Store::connect(&args.backends.store).await?;
            let gateway = GatewayArgs {
                listen: args.gateway_listen,
                grpc: args.grpc,
                ..GatewayArgs::loopback()
            };
            let status = StatusArgs {
                listen: args.status_listen,
                grpc: args.grpc,
                ..StatusArgs::loopback()
            };
            let endpoints = demo::start(&ctx, &bus, &store, gateway, &status, args.clients).await?;
            for e in &endpoints {
                tracing::info!(what = %e.what, url = %e.url, "presence listening");
            }
            ctx.shutdown.cancelled().await;
            Ok(())
        }
        Command::Client(args) => client::run(args, ctx).await,
        Command::Clients(args) => clients::run(args, ctx).await,
        Command::Online(args) => {
            let online = status::fetch_online_with(&args.status, &args.tls).await?;
            println!("{online}");
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", ClientAuth::new(&args.client_auth_key)?.token(args.id));
            Ok(())
        }
    }
}
