//! A presence client: keeps one stream open to a gateway, answers every Ping with a Pong
//! carrying EVEN/ODD from the current Unix time in ms, and reconnects with jittered
//! exponential backoff — to the next gateway in its list, so a dead gateway's clients spread
//! over the others.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use switchboard_core::{Clock, Ctx, Health, SystemClock};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

use crate::auth::{CLIENT_TOKEN_HEADER, ClientAuth};
use crate::gateway::CLIENT_ID_HEADER;
use crate::jitter::Jitter;
use crate::proto::gateway_client::GatewayClient;
use crate::proto::{Pong, Status};
use crate::tls::ClientTls;
use crate::{Error, Result};

/// `switchboard presence client` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// This client's unique id (default: a random UUID).
    #[arg(long, env = "SWITCHBOARD_ID")]
    pub id: Option<uuid::Uuid>,
    /// This client's token for a gateway with --client-auth-key (from `presence token`).
    #[arg(
        long,
        env = "SWITCHBOARD_CLIENT_TOKEN",
        hide_env_values = true,
        conflicts_with = "client_auth_key"
    )]
    pub client_token: Option<String>,
    /// Where to connect.
    #[command(flatten)]
    pub target: Target,
}

/// Where clients connect and how they retry (shared by `client` and `clients`).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Gateway URL(s); on failure a client moves to the next one. Repeat or comma-separate.
    #[arg(
        long = "gateway",
        env = "SWITCHBOARD_GATEWAY",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateways: Vec<String>,
    /// Longest wait between reconnection attempts.
    #[arg(long, env = "SWITCHBOARD_MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,
    /// The gateways' --client-auth-key: each client mints its own token (simulated clients;
    /// real ones get theirs from whoever issues their ids).
    #[arg(long, env = "SWITCHBOARD_CLIENT_AUTH_KEY", hide_env_values = true)]
    pub client_auth_key: Option<String>,
    /// TLS for `https://` gateways.
    #[command(flatten)]
    pub tls: ClientTls,
}

impl Target {
    /// Clients of `gateways` with the default 5 s backoff cap, no token, no TLS.
    pub fn new(gateways: Vec<String>) -> Self {
        Self {
            gateways,
            max_backoff: Duration::from_secs(5),
            client_auth_key: None,
            tls: ClientTls::default(),
        }
    }
}

/// Runs one client until `ctx.shutdown`.
///
/// # Errors
/// A gateway URL is invalid.
pub async fn run(args: ClientArgs, ctx: Ctx) -> Result<()> {
    let id = args.id.unwrap_or_else(uuid::Uuid::new_v4);
    let mut client =
        Client::new(id, &args.target, None)?.with_health(&ctx.health, "presence-client");
    if let Some(token) = args.client_token {
        client.token = Some(Token::Given(token));
    }
    tracing::info!(client_id = %id, gateways = ?args.target.gateways, "presence client starting");
    client.run(0, ctx.shutdown.clone()).await;
    Ok(())
}

/// One client's identity and where it may connect.
#[derive(Clone)]
pub struct Client {
    id: uuid::Uuid,
    gateways: Arc<[Endpoint]>,
    /// One lazily connected channel per gateway, shared by every clone made after
    /// [`Client::sharing_connections`]: their streams are multiplexed on one HTTP/2 connection
    /// per gateway, as behind an L7 proxy. `None`: each session opens its own connection.
    shared: Option<Arc<[Channel]>>,
    /// What this client presents as its `client-token`, if anything.
    token: Option<Token>,
    max_backoff: Duration,
    jitter: Option<Arc<Jitter>>,
    /// Shared by every clone ([`Client::with_id`]): a crowd of simulated clients reports as one.
    reach: Arc<Reach>,
}

/// Where a client's token comes from.
#[derive(Clone)]
enum Token {
    /// Minted elsewhere and given to this one client.
    Given(String),
    /// Minted by each client from the gateways' key (simulated clients).
    Derived(Arc<ClientAuth>),
}

/// Failed attempts in a row after which a client's failure is logged at WARN, not DEBUG: the
/// first ones are the normal race of clients started before their gateway.
const QUIET_FAILURES: u32 = 2;
/// At most one WARN per this period for all clients sharing a [`Reach`].
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many clients of one crowd hold a stream, and readiness to match: a client that cannot
/// reach any gateway is not doing its job, and `/readyz` says so.
#[derive(Default)]
struct Reach {
    /// Clients holding a stream. A std Mutex rather than an atomic: readiness must flip in the
    /// same order as the count (held for an increment and a map insert, never across an await).
    connected: Mutex<usize>,
    last_warn: Mutex<Option<Instant>>,
    /// Readiness component to keep in step with `connected > 0`.
    health: Option<(Health, &'static str)>,
}

impl Reach {
    fn attached(&self) {
        let mut n = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        if let (1, Some((health, component))) = (*n, &self.health) {
            health.set_ready(component, true);
        }
    }

    fn detached(&self) {
        let mut n = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if let (0, Some((health, component))) = (*n, &self.health) {
            health.set_ready(component, false);
        }
    }

    /// Logs `error` at WARN if no other client of the crowd did within [`WARN_EVERY`].
    fn warn(&self, gateway: &Endpoint, error: &Error) {
        let now = Instant::now();
        {
            // A std Mutex: held for one comparison, never across an await.
            let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                return;
            }
            *last = Some(now);
        }
        tracing::warn!(
            gateway = %gateway.uri(),
            error = %switchboard_core::describe_error(error),
            connected = *self.connected.lock().unwrap_or_else(|p| p.into_inner()),
            "cannot reach the presence gateway; retrying (is it running at that address?)"
        );
    }
}

impl Client {
    /// A client `id` for `gateways`, recording Ping intervals into `jitter` if given.
    ///
    /// # Errors
    /// No gateway, or a URL that does not parse.
    pub fn new(id: uuid::Uuid, target: &Target, jitter: Option<Arc<Jitter>>) -> Result<Self> {
        let gateways = &target.gateways;
        if gateways.is_empty() {
            return Err(Error::config("at least one --gateway is needed"));
        }
        let gateways = gateways
            .iter()
            .map(|g| crate::tls::apply(&target.tls, "--gateway", tune(endpoint(g)?)))
            .collect::<Result<Vec<_>>>()?;
        let token = match &target.client_auth_key {
            Some(key) => Some(Token::Derived(Arc::new(ClientAuth::new(key)?))),
            None => None,
        };
        Ok(Self {
            id,
            gateways: gateways.into(),
            shared: None,
            token,
            max_backoff: target.max_backoff,
            jitter,
            reach: Arc::default(),
        })
    }

    /// The same client whose readiness `component` in `health` is "at least one clone holds a
    /// stream to a gateway" (registered not ready now).
    pub fn with_health(self, health: &Health, component: &'static str) -> Self {
        health.register(component);
        let reach = Reach { health: Some((health.clone(), component)), ..Reach::default() };
        Self { reach: Arc::new(reach), ..self }
    }

    /// Clone with another id (many simulated clients share the parsed endpoints).
    pub fn with_id(&self, id: uuid::Uuid) -> Self {
        Self { id, ..self.clone() }
    }

    /// The same client holding one new HTTP/2 connection per gateway (opened on first use,
    /// re-opened after a failure), shared with every clone made from it.
    pub fn sharing_connections(&self) -> Self {
        let channels = self
            .gateways
            .iter()
            // The connection carries many streams' Pings: its window must cover a round of them.
            .map(|e| e.clone().initial_connection_window_size(crate::gateway::CONNECTION_WINDOW))
            .map(|e| e.connect_lazy())
            .collect::<Vec<_>>();
        Self { shared: Some(channels.into()), ..self.clone() }
    }

    /// Connects and answers Pings until `shutdown`, starting with gateway `first` (mod len).
    pub async fn run(&self, first: usize, shutdown: CancellationToken) {
        let mut attempt = 0u32;
        let mut next = first % self.gateways.len();
        while !shutdown.is_cancelled() {
            let gateway = &self.gateways[next];
            let span = tracing::info_span!("presence.client.session", client_id = %self.id, gateway = %gateway.uri());
            let outcome = self.session(next, &shutdown).instrument(span).await;
            match outcome {
                Ok(true) => attempt = 0,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(client_id = %self.id, error = %switchboard_core::describe_error(&e), "gateway session failed");
                    if attempt >= QUIET_FAILURES {
                        self.reach.warn(gateway, &e);
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            metrics::counter!("presence_client_reconnects_total").increment(1);
            next = (next + 1) % self.gateways.len();
            let delay = backoff(attempt, self.max_backoff);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream; `Ok(true)` if at least one Ping was answered (the backoff resets).
    async fn session(&self, gateway: usize, shutdown: &CancellationToken) -> Result<bool> {
        let channel = match &self.shared {
            Some(channels) => channels[gateway].clone(),
            None => self.gateways[gateway].connect().await?,
        };
        let mut client = GatewayClient::new(channel);
        let (tx, rx) = mpsc::channel::<Pong>(2);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let id = tonic::metadata::MetadataValue::try_from(self.id.to_string())
            .map_err(|e| Error::config(e.to_string()))?;
        request.metadata_mut().insert(CLIENT_ID_HEADER, id);
        if let Some(token) = &self.token {
            let token = match token {
                Token::Given(t) => t.clone(),
                Token::Derived(auth) => auth.token(self.id),
            };
            let token = tonic::metadata::MetadataValue::try_from(token)
                .map_err(|_| Error::config("--client-token must be printable ASCII"))?;
            request.metadata_mut().insert(CLIENT_TOKEN_HEADER, token);
        }
        crate::trace::inject_metadata(&tracing::Span::current(), request.metadata_mut());
        let mut inbound = client.attach(request).await?.into_inner();
        metrics::gauge!("presence_clients_connected").increment(1.0);
        self.reach.attached();
        let mut pings = 0u32;
        let mut last_ping = Instant::now();
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                msg = inbound.message() => match msg {
                    Ok(Some(_ping)) => {
                        let now = Instant::now();
                        // The gateway pings at once on attach, then on the client's slot: the
                        // first interval is a phase offset, not jitter.
                        if let (Some(j), true) = (&self.jitter, pings >= 2) {
                            j.record(now - last_ping);
                        }
                        last_ping = now;
                        pings = pings.saturating_add(1);
                        let status = Status::at(SystemClock.now_ms());
                        if tx.send(Pong { status: status.into() }).await.is_err() {
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(Error::Rpc(status)),
                },
            }
        };
        metrics::gauge!("presence_clients_connected").decrement(1.0);
        self.reach.detached();
        result.map(|()| pings > 0)
    }
}

/// Parses a gateway URL, insisting on a scheme: tonic takes `127.0.0.1:50051` for a URL and
/// then fails every connection attempt with a bare "transport error".
fn endpoint(url: &str) -> Result<Endpoint> {
    let uri = switchboard_core::url::http("--gateway", url).map_err(Error::config)?;
    Ok(Endpoint::from(uri))
}

/// Client-side HTTP/2 settings: small windows (tiny messages), keepalive to notice a dead
/// gateway whose TCP connection never errors.
fn tune(e: Endpoint) -> Endpoint {
    e.connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(4_096)
        .initial_connection_window_size(8_192)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}

/// Full-jitter exponential backoff: uniform in [0, min(max, 100 ms · 2^attempt)], at least
/// 50 ms — spreads a crowd of clients whose gateway died.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let cap = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16)).min(max);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(50);
    Duration::from_millis(rand::rng().random_range(50..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        for _ in 0..100 {
            assert!(backoff(0, max) <= Duration::from_millis(100));
            assert!(backoff(30, max) <= max);
            assert!(backoff(30, max) >= Duration::from_millis(50));
        }
        assert!((0..200).any(|_| backoff(10, max) > Duration::from_secs(1)));
    }

    #[test]
    fn a_client_needs_a_valid_gateway() {
        let id = uuid::Uuid::new_v4();
        assert!(Client::new(id, &Target::new(vec![]), None).is_err());
        assert!(Client::new(id, &Target::new(vec!["not a url".into()]), None).is_err());
        assert!(Client::new(id, &Target::new(vec!["http://127.0.0.1:1".into()]), None).is_ok());
        for bad in ["127.0.0.1:25051", "ftp://127.0.0.1:25051", "localhost"] {
            let err = Client::new(id, &Target::new(vec![bad.into()]), None).err();
            assert!(matches!(err, Some(Error::Config(ref m)) if m.0.contains("http://")), "{bad}");
        }
    }
}
