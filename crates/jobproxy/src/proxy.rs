//! The proxy role: accepts synchronous `{"account","wait":true}` requests on `/` and `/start`,
//! starts the job upstream with `wait:false` and a callback URL naming a fresh [`Token`], holds
//! the client until the callback arrives and answers with the callback body byte for byte.
//! `wait:false` requests pass straight through (over the same per-account connection).
//!
//! Shutdown: new starts get 503 at once, but the listener keeps accepting until every held
//! request has ended, so callbacks for jobs already started can still land. Held requests
//! still waiting after `--drain-timeout` get 503 draining, so every client is answered before
//! the binary's grace period ends.
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use switchboard_core::Ctx;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::failure::Failure;
use crate::job::{ReportHead, StartRequest};
use crate::upstream::{Answer, LinkConfig, Target, Upstream};
use crate::waiter::Waiters;
use crate::{Error, Result, callback};

/// `switchboard jobproxy`: the proxy's settings and the bus it shares with other nodes. The
/// settings hold no URL of a shared dependency: [`crate::run`] connects the bus once and hands
/// it to [`start`], as the demo and the tests hand in theirs.
#[derive(Debug, Clone, clap::Args)]
pub struct Command {
    #[command(flatten)]
    pub settings: Args,

    /// Message bus joining proxy nodes behind one public address (`nats://host:4222`): a
    /// callback for another node's request is forwarded to it. `memory://`: a single node.
    #[arg(long, env = "SWITCHBOARD_BUS", default_value = "memory://")]
    pub bus: String,
}

/// The proxy's settings (`switchboard jobproxy` flags but `--bus`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to serve clients and callbacks on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the job server (`http://host:port`); `/start` is appended unless present.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM")]
    pub upstream: String,

    /// URL the job server uses to reach this proxy; callbacks go to
    /// `<public-url>/callback/<token>`. Default: `http://<listen address>`.
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL", value_parser = checked_public_url)]
    pub public_url: Option<String>,

    /// This node's id (0–65535), carried in its callback tokens so that other nodes can
    /// forward its callbacks; unique among the nodes sharing a bus (checked at start).
    #[arg(long, env = "SWITCHBOARD_NODE_ID", default_value_t = 0)]
    pub node_id: u16,

    /// How long a held request may wait for its job (start included) before a 504.
    #[arg(long, env = "SWITCHBOARD_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,

    /// How long held requests may still wait once shutdown begins; then they get 503
    /// draining. Keep it below the binary's `--grace` so every client gets an answer.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "8s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How long one start exchange with the job server may take before a 504.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Most requests in flight at once (held or passing through); further ones get 503.
    /// Open connections are capped at this plus 1024 (idle keep-alive, requests being read).
    #[arg(long, env = "SWITCHBOARD_MAX_HELD", default_value = "20000")]
    pub max_held: NonZeroUsize,

    #[command(flatten)]
    pub http: switchboard_core::http::HttpArgs,

    #[command(flatten)]
    pub tls: switchboard_core::tls::TlsArgs,

    /// Starts queued per account (each account has one upstream connection) before 503.
    #[arg(long, env = "SWITCHBOARD_ACCOUNT_QUEUE", default_value = "4096")]
    pub account_queue: NonZeroUsize,

    /// Most account links (each one upstream connection) open at once; a start for a new
    /// account beyond this gets 503 until an idle link closes.
    #[arg(long, env = "SWITCHBOARD_MAX_LINKS", default_value = "1024")]
    pub max_links: NonZeroUsize,

    /// Close an account's upstream connection after this idle time, so other clients of the
    /// same account get their turn at the job server.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_IDLE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub upstream_idle: Duration,

    /// Largest request, callback or upstream response body, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_BODY", default_value_t = 65_536)]
    pub max_body: usize,
}

/// Shared state of one proxy.
pub(crate) struct Proxy {
    pub waiters: Arc<Waiters>,
    /// Sends callbacks for other nodes' tokens to them (`None`: a single node).
    pub forwarder: Option<crate::forward::Forwarder>,
    /// `--max-body`: the callback endpoint reads its body itself to tell the held request.
    pub max_body: usize,
    upstream: Arc<Upstream>,
    public_url: String,
    deadline: Duration,
    held_limit: Semaphore,
    shutdown: CancellationToken,
    /// Cancelled when the drain has lasted `--drain-timeout`: held requests give up with 503.
    drain_expired: CancellationToken,
}

/// A running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    waiters: Arc<Waiters>,
    stopped: CancellationToken,
}

impl ProxyHandle {
    /// Requests held right now (what the `jobproxy_held_requests` gauge shows).
    pub fn held(&self) -> usize {
        self.waiters.held()
    }

    /// Resolves once the proxy has drained and closed its listener.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}

/// Binds the proxy and serves it on `ctx` until `ctx.shutdown` (then drains held requests).
/// A bus shared with other processes (not process-local) joins this node to the others
/// behind one public address.
///
/// # Errors
/// Invalid flags, or the address cannot be bound.
pub async fn start(args: Args, bus: switchboard_bus::Bus, ctx: &Ctx) -> Result<ProxyHandle> {
    let target = Target::parse(&args.upstream)?;
    let listener = switchboard_core::admin::listen(args.listen)
        .map_err(|source| Error::Bind { addr: args.listen, source })?;
    let addr = listener.local_addr()?;
    let tls = args
        .tls
        .server_config()
        .map_err(|e| Error::config(switchboard_core::describe_error(&e)))?;
    let public_url = public_url(args.public_url.as_deref(), addr, tls.is_some())?;
    let shutdown = ctx.shutdown.clone();
    let shared_bus = !bus.is_process_local();
    let config = LinkConfig {
        queue: args.account_queue.get(),
        max_links: args.max_links.get(),
        idle: args.upstream_idle,
        timeout: args.upstream_timeout,
        max_body: args.max_body,
    };
    let proxy = Arc::new(Proxy {
        waiters: Arc::new(Waiters::on_node(args.node_id)),
        forwarder: shared_bus.then(|| crate::forward::Forwarder::new(bus.clone())),
        max_body: args.max_body,
        upstream: Upstream::new(target, config, ctx.tasks.clone(), shutdown.clone()),
        public_url,
        deadline: args.deadline,
        held_limit: Semaphore::new(args.max_held.get()),
        shutdown: shutdown.clone(),
        drain_expired: CancellationToken::new(),
    });
    let app = router(Arc::clone(&proxy), args.max_body);
    let (waiters, expired) = (Arc::clone(&proxy.waiters), proxy.drain_expired.clone());
    let front_proxy = Arc::clone(&proxy);
    let drain_timeout = args.drain_timeout;
    let limits =
        args.http.limits(args.max_held.get().saturating_add(SPARE_CONNECTIONS), "jobproxy");
    let stopped = CancellationToken::new();
    if shared_bus {
        crate::forward::serve(&bus, Arc::clone(&proxy), stopped.clone()).await?;
    }
    let done = stopped.clone();
    ctx.spawn(async move {
        let drained = async move {
            shutdown.cancelled().await;
            tracing::info!(held = waiters.held(), "jobproxy draining held requests");
            if tokio::time::timeout(drain_timeout, waiters.idle()).await.is_err() {
                // Past this the binary's grace would cut the connections without an answer.
                tracing::warn!(held = waiters.held(), "drain timeout: answering held requests 503");
                expired.cancel();
                waiters.idle().await;
            }
        };
        let front: Arc<dyn switchboard_core::http::Front> =
            Arc::new(crate::front::HeldFront { proxy: front_proxy });
        let served = switchboard_core::http::serve_with_front(
            listener,
            Some(front),
            app,
            limits,
            tls,
            "jobproxy",
            drained,
        );
        if let Err(e) = served.await {
            tracing::error!(error = %switchboard_core::describe_error(&e), "jobproxy server failed");
        }
        done.cancel();
    });
    ctx.health.set_ready("jobproxy", true);
    // Where this process itself reaches the proxy (the console's job check dials it).
    let scheme = if proxy.public_url.starts_with("https:") { "https" } else { "http" };
    let local = if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    switchboard_core::status::publish(
        "jobproxy",
        serde_json::json!({
            "url": local,
            "public_url": proxy.public_url,
            "upstream": switchboard_core::redact::url(&args.upstream),
            "node": args.node_id,
        }),
    );
    tracing::info!(%addr, upstream = %switchboard_core::redact::url(&args.upstream), public_url = %proxy.public_url, node = args.node_id, bus = bus.kind(), "jobproxy listening");
    Ok(ProxyHandle { addr, waiters: Arc::clone(&proxy.waiters), stopped })
}

/// Connections beyond `--max-held`: clients between requests or still sending one.
const SPARE_CONNECTIONS: usize = 1024;

/// Rejects a bad `--public-url` while parsing flags (so the binary exits 64).
fn checked_public_url(url: &str) -> Result<String, String> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    public_url(Some(url), unspecified, false).map_err(|e| switchboard_core::describe_error(&e))
}

/// `--public-url`, or the listener's own address (`https://` when it serves TLS, so the job
/// server's callbacks speak what the listener speaks).
fn public_url(given: Option<&str>, addr: SocketAddr, tls: bool) -> Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let url = match given {
        Some(u) => u.trim_end_matches('/').to_owned(),
        // A wildcard address is not reachable as such; loopback is the only safe guess.
        None if addr.ip().is_unspecified() => format!("{scheme}://127.0.0.1:{}", addr.port()),
        None => format!("{scheme}://{addr}"),
    };
    match url.parse::<http::Uri>() {
        // The job server POSTs callbacks to it: only HTTP(S) can carry them.
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            Ok(url)
        }
        _ => Err(Error::config(format!("--public-url {url:?} is not an absolute http(s) URL"))),
    }
}

/// The proxy's routes: starts on `/` and `/start`, callbacks on `/callback/{token}`.
pub(crate) fn router(proxy: Arc<Proxy>, max_body: usize) -> Router {
    Router::new()
        .route("/", post(start_job))
        .route("/start", post(start_job))
        .route("/callback/{token}", post(callback::receive))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(proxy)
}

async fn start_job(State(proxy): State<Arc<Proxy>>, body: Bytes) -> Result<Response, Failure> {
    observed(proxy.start_job(body)).await
}

/// Runs a start request in its span; counted as `client_gone` if dropped before it ends.
pub(crate) fn observed(
    job: impl Future<Output = Result<Response, Failure>>,
) -> impl Future<Output = Result<Response, Failure>> {
    let watch = ClientWatch::armed();
    let span = tracing::info_span!("jobproxy.start", account = Empty, token = Empty, job = Empty);
    // Boxed and awaited by reference: awaiting a future taken by value keeps its space twice
    // (the argument and the awaited copy), and a held request keeps this for its whole wait.
    let mut job = Box::pin(job.instrument(span));
    async move {
        let result = (&mut job).await;
        watch.disarm();
        result
    }
}

impl Proxy {
    /// A start request of either kind, as axum hands it over.
    async fn start_job(&self, body: Bytes) -> Result<Response, Failure> {
        if self.shutdown.is_cancelled() {
            return Err(Failure::Draining);
        }
        let request = StartRequest::parse(&body).map_err(Failure::BadRequest)?;
        if request.wait {
            // Bytes may share the connection's read buffer: do not keep it alive while held.
            drop(body);
            return self.held_job(request).await;
        }
        Span::current().record("account", request.account.as_str());
        // Passthroughs count too: each one may open an account link upstream.
        let _permit = self.permit()?;
        let answer = self.upstream.start(&request.account, body).await?;
        count("passthrough");
        Ok(passthrough(answer))
    }

    /// A `wait:true` request: starts its job and waits for the report.
    pub(crate) async fn held_job(&self, request: StartRequest) -> Result<Response, Failure> {
        if self.shutdown.is_cancelled() {
            return Err(Failure::Draining);
        }
        Span::current().record("account", request.account.as_str());
        let _permit = self.permit()?;
        // Boxed: the start's state (the upstream exchange) is freed once the job runs, so a
        // held request keeps only what waiting needs.
        let begin = Box::pin(self.begin(request));
        let waiting = match begin.await? {
            Begun::Answered(response) => return Ok(response),
            Begun::Waiting(waiting) => waiting,
        };
        let Waiting { hold, report, began, deadline } = waiting;
        let body = self
            .until(deadline, report)
            .await?
            .map_err(|_| Failure::Upstream("the held request was dropped".into()))?
            .map_err(Failure::Upstream)?;
        drop(hold);
        metrics::histogram!("jobproxy_held_seconds").record(began.elapsed().as_secs_f64());
        count("ok");
        Ok(report_response(body))
    }

    fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
        self.held_limit.try_acquire().map_err(|_| {
            metrics::counter!("jobproxy_shed_total", "bound" => "max_held").increment(1);
            Failure::Shed("max_held")
        })
    }

    /// Starts the job of a `wait:true` request upstream, with a callback to a fresh token.
    async fn begin(&self, request: StartRequest) -> Result<Begun, Failure> {
        let began = Instant::now();
        let deadline = tokio::time::Instant::from_std(began + self.deadline);
        let (hold, report) = self.waiters.hold();
        let shown = switchboard_core::redact::token(hold.token());
        Span::current().record("token", tracing::field::display(shown));
        let account = request.account.clone();
        let upstream_body =
            request.into_async(&format!("{}/callback/{}", self.public_url, hold.token()));
        let started = self.until(deadline, self.upstream.start(&account, upstream_body)).await??;
        drop(account);
        let head = accepted(&started)?;
        Span::current().record("job", head.id.as_str());
        if head.state == "completed" || head.state == "failed" {
            // The job server finished at once (it ignored wait:false): that is the report.
            count("ok");
            return Ok(Begun::Answered(report_response(started.body)));
        }
        drop(started);
        if let Some(parked) = self.waiters.started(hold.token(), &head.id) {
            parked.count();
        }
        Ok(Begun::Waiting(Waiting { hold, report, began, deadline }))
    }
}

/// How a started job goes on.
enum Begun {
    /// The start answered with the report already.
    Answered(Response),
    /// The job runs; its report comes by callback.
    Waiting(Waiting),
}

/// A held request whose job runs: all it keeps while it waits.
struct Waiting {
    hold: crate::waiter::Hold,
    report: tokio::sync::oneshot::Receiver<crate::waiter::Report>,
    began: Instant,
    deadline: tokio::time::Instant,
}

impl Proxy {
    /// Waits for `fut` until the request's `deadline` (504), or until the shutdown drain has
    /// run out of time (503 draining).
    async fn until<T>(
        &self,
        deadline: tokio::time::Instant,
        fut: impl Future<Output = T>,
    ) -> Result<T, Failure> {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, fut) => {
                r.map_err(|_| Failure::CallbackTimeout(self.deadline))
            }
            () = self.drain_expired.cancelled() => Err(Failure::Draining),
        }
    }
}

/// Checks the job server's answer to an asynchronous start.
fn accepted(answer: &Answer) -> Result<ReportHead, Failure> {
    if !answer.status.is_success() {
        let snippet = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]);
        return Err(Failure::Upstream(format!("job server answered {}: {snippet}", answer.status)));
    }
    ReportHead::parse(&answer.body).map_err(|e| Failure::Upstream(format!("start response {e}")))
}

fn report_response(body: Bytes) -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn passthrough(answer: Answer) -> Response {
    let mut res = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        res.headers_mut().insert(CONTENT_TYPE, ct);
    }
    res
}

fn count(outcome: &'static str) {
    metrics::counter!("jobproxy_requests_total", "outcome" => outcome).increment(1);
}

/// Counts requests whose client went away: hyper (and the [`front`](crate::front)) drops the
/// handler future when the client's connection closes, so reaching `Drop` while armed means nobody is waiting any more.
struct ClientWatch {
    armed: bool,
}

impl ClientWatch {
    fn armed() -> Self {
        Self { armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        if self.armed {
            count("client_gone");
            tracing::debug!("client went away; its held request was dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_must_be_absolute_http() {
        assert_eq!(checked_public_url("https://jobs.example/").unwrap(), "https://jobs.example");
        for bad in ["ftp://x", "jobs.example", "/callback", "http://"] {
            let err = checked_public_url(bad).unwrap_err();
            assert!(err.contains("is not an absolute http(s) URL"), "{bad}: {err}");
        }
        let wildcard = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert_eq!(public_url(None, wildcard, true).unwrap(), "https://127.0.0.1:8080");
    }
}
