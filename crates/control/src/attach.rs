//! The Attach RPC, the console's gRPC side: agents attach here. Every attach is authenticated (shared
//! token), bounded (agent count, message size, reply rate) and validated (hello first, name
//! syntax, no duplicate names) before the agent joins the [`Fleet`].
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use switchboard_core::Ctx;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::fleet::{self, Fleet};
use crate::proto::control_server::{Control, ControlServer};
use crate::proto::{AgentMessage, AgentState, Command, agent_message};
use crate::rate::RateLimit;
use crate::{Error, Result};

/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest agent name.
const MAX_NAME: usize = 64;

/// Limits the console applies to attaching agents.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Shared secret agents must present as `authorization: Bearer <token>`.
    pub token: String,
    /// Agents attached at once at most.
    pub max_agents: usize,
    /// Messages per second accepted from one agent; an agent above it is disconnected.
    pub reply_rate: f64,
    /// A connection without an attached agent (or any call) is closed after this long.
    pub idle_timeout: Duration,
    /// TLS (and, with a client CA, mutual TLS); `None` serves plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Checks an agent name: 1–64 characters of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// Says what is wrong with the name.
pub(crate) fn check_name(name: &str) -> Result<&str, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok) {
        return Err(format!(
            "agent name must be 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ - (got {} bytes)",
            name.len()
        ));
    }
    Ok(name)
}

/// Binds `addr` and serves the Control service until `ctx.shutdown`; returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, gate: Gate, fleet: Fleet, ctx: &Ctx) -> Result<SocketAddr> {
    let listener =
        switchboard_core::admin::listen(addr).map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let max = crate::op::MAX_WIRE_BYTES;
    // Connections beyond `--max-agents` for peers still authenticating or refused: the cap
    // applies before any token check, so unauthenticated peers cannot hold descriptors.
    let limits = switchboard_core::grpc::Limits::new(
        gate.idle_timeout,
        gate.max_agents.saturating_add(SPARE_CONNECTIONS),
        "control",
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = gate.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let service = ControlService {
        slots: Arc::new(Semaphore::new(gate.max_agents)),
        gate: Arc::new(gate),
        fleet,
        ctx: ctx.clone(),
    };
    let server = builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(4)
        .layer(switchboard_core::grpc::StreamCountLayer)
        .add_service(
            ControlServer::new(service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    let shutdown = ctx.shutdown.clone();
    ctx.spawn(async move {
        let incoming = switchboard_core::grpc::incoming(listener, limits, "control");
        if let Err(e) =
            server.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
        {
            tracing::error!(error = %switchboard_core::describe_error(&e), "control gRPC server failed");
        }
    });
    tracing::info!(listen = %local, "control console accepting agents");
    Ok(local)
}

/// Connections beyond `--max-agents` allowed for peers still authenticating or refused.
const SPARE_CONNECTIONS: usize = 64;

struct ControlService {
    gate: Arc<Gate>,
    slots: Arc<Semaphore>,
    fleet: Fleet,
    ctx: Ctx,
}

impl ControlService {
    fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if switchboard_core::auth::token_matches(presented, &self.gate.token) {
            Ok(())
        } else {
            metrics::counter!("control_server_auth_failures_total").increment(1);
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<Command, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type AttachStream = CommandStream;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<CommandStream>, Status> {
        let peer = switchboard_core::grpc::remote_addr(&request);
        if let Err(s) = self.authenticate(request.metadata()) {
            tracing::warn!(?peer, "agent refused: missing or wrong token");
            return Err(s);
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("control_server_shed_total", "queue" => "agents").increment(1);
            tracing::warn!(?peer, max = self.gate.max_agents, "agent refused: console full");
            return Err(Status::resource_exhausted(format!(
                "the console serves at most {} agents",
                self.gate.max_agents
            )));
        };
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage { kind: Some(agent_message::Kind::Hello(h)) }))) => h,
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 5 s")),
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let name = check_name(&hello.name).map_err(Status::invalid_argument)?.to_owned();
        let state = AgentState::try_from(hello.state).unwrap_or(AgentState::Unspecified);
        let attachment = self.fleet.attach(&name, state).map_err(Status::already_exists)?;
        tracing::info!(agent = %name, ?peer, ?state, "agent attached");

        let reader = Reader {
            fleet: self.fleet.clone(),
            name: name.clone(),
            session: attachment.session,
            pending: attachment.pending,
            rate: self.gate.reply_rate,
        };
        let shutdown = self.ctx.shutdown.clone();
        let span = tracing::info_span!("control_session", agent = %name, session = reader.session);
        self.ctx.spawn(
            async move {
                let reason = reader.run(inbound, shutdown).await;
                drop(permit);
                tracing::info!(agent = %name, %reason, "agent detached");
            }
            .instrument(span),
        );
        let commands = ReceiverStream::new(attachment.commands).map(Ok);
        Ok(Response::new(Box::pin(commands)))
    }
}

/// Reads one agent's replies and routes them until the stream ends, the agent floods, or
/// the console shuts down; then detaches the agent.
struct Reader {
    fleet: Fleet,
    name: String,
    session: u64,
    pending: fleet::Pending,
    rate: f64,
}

impl Reader {
    /// Returns why the session ended.
    async fn run(
        self,
        mut inbound: Streaming<AgentMessage>,
        shutdown: CancellationToken,
    ) -> String {
        let burst = (self.rate * 2.0).clamp(1.0, f64::from(u32::MAX)) as u32;
        let mut limit = RateLimit::new(self.rate, burst, Instant::now());
        let reason = loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => break "console shutting down".to_owned(),
                m = inbound.message() => m,
            };
            let kind = match msg {
                Ok(Some(m)) => m.kind,
                Ok(None) => break "agent closed the stream".to_owned(),
                Err(s) => break format!("stream error: {}", s.message()),
            };
            // Every message costs a token, so no kind of message can flood the console or
            // its log.
            if !limit.try_take(Instant::now()) {
                metrics::counter!("control_server_shed_total", "queue" => "agent_flood")
                    .increment(1);
                break format!("more than {} messages/s: disconnected", self.rate);
            }
            let Some(agent_message::Kind::Reply(reply)) = kind else {
                metrics::counter!("control_server_bad_messages_total").increment(1);
                tracing::warn!(agent = %self.name, "unexpected message from agent skipped");
                continue;
            };
            if let Ok(s) = AgentState::try_from(reply.state) {
                self.fleet.set_state(&self.name, self.session, s);
            }
            self.fleet.note_reply(&self.name, self.session, &reply);
            if !fleet::route(&self.pending, reply) {
                metrics::counter!("control_server_unknown_replies_total").increment(1);
                tracing::debug!(agent = %self.name, "reply to no pending command skipped");
            }
        };
        self.fleet.detach(&self.name, self.session);
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("agent-1.eu_west").is_ok());
        for bad in ["", "a b", "x\n", "ä", &"n".repeat(65), "../etc"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
