//! `switchboard sim jobserver`: a faithful simulator of the job server the proxy talks to.
//!
//! * `POST /start {"account","wait":true}` runs a job (`--job-time`, ~0.5 s) and answers with
//!   the report; `{"account","wait":false,"callback":URL}` answers `{"state":"running","id"}`
//!   at once and POSTs the report to `URL` when the job ends (with retries).
//! * **One connection at a time per account**: the first request for an account on a
//!   connection takes that account's lock and keeps it until the connection closes; other
//!   connections asking for the same account queue. This is why a proxy must not open a socket
//!   per request.
//! * Faults (`--fail-start-rate`, `--slow-callback-rate`, …) make every failure path testable.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use switchboard_core::Ctx;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::job::{Report, proof};
use crate::{Error, Result};

mod delivery;
mod fault;

use delivery::Courier;
pub use fault::Faults;
use fault::roll;

/// `switchboard sim jobserver` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct JobServerArgs {
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// How long one job runs.
    #[arg(long, env = "SWITCHBOARD_JOB_TIME", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub job_time: Duration,

    /// Injected latency before every `/start` is handled.
    #[arg(long, env = "SWITCHBOARD_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Delivery attempts per callback, the first one included.
    #[arg(long, env = "SWITCHBOARD_CALLBACK_ATTEMPTS", default_value_t = 5)]
    pub callback_attempts: u32,

    /// Wait before the first callback retry; doubles on every further retry.
    #[arg(long, env = "SWITCHBOARD_CALLBACK_BACKOFF", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub callback_backoff: Duration,

    /// Timeout of one callback POST.
    #[arg(long, env = "SWITCHBOARD_CALLBACK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub callback_timeout: Duration,

    /// Callback POSTs in flight at once.
    #[arg(long, env = "SWITCHBOARD_CALLBACK_CONCURRENCY", default_value_t = 256)]
    pub callback_concurrency: usize,

    /// Asynchronous jobs running at once; further starts get 503.
    #[arg(long, env = "SWITCHBOARD_MAX_JOBS", default_value_t = 100_000)]
    pub max_jobs: usize,

    #[command(flatten)]
    pub faults: Faults,
}

impl JobServerArgs {
    /// Defaults on an ephemeral loopback port with the given job time (demo and bench).
    pub fn loopback(job_time: Duration) -> Self {
        let job_time = humantime::format_duration(job_time).to_string();
        switchboard_core::config::flags(&["--listen", "127.0.0.1:0", "--job-time", &job_time])
    }
}

/// A running simulator.
#[derive(Clone)]
pub struct JobServer {
    addr: SocketAddr,
    sim: Arc<Sim>,
}

struct Sim {
    job_time_ms: AtomicU64,
    latency: Duration,
    faults: Faults,
    courier: Courier,
    jobs: Arc<Semaphore>,
    // A std Mutex: a map lookup only, never held across an await.
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
    connections: AtomicU64,
    ctx: Ctx,
}

/// Per-connection state: the account locks this connection holds until it closes.
#[derive(Default)]
struct Connection {
    accounts: Mutex<HashMap<String, OwnedSemaphorePermit>>,
}

#[derive(Deserialize)]
struct StartBody {
    account: String,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    callback: Option<String>,
}

impl JobServer {
    /// Binds and serves the simulator on `ctx` until `ctx.shutdown`.
    ///
    /// # Errors
    /// The address cannot be bound or the callback client cannot be built.
    pub async fn start(args: JobServerArgs, ctx: &Ctx) -> Result<Self> {
        let listener = switchboard_core::admin::listen(args.listen)
            .map_err(|source| Error::Bind { addr: args.listen, source })?;
        let addr = listener.local_addr()?;
        let courier = Courier {
            // Idle callback connections are closed after a while, as real servers do; a
            // 90 s default would keep hundreds of the proxy's sockets open after a burst.
            client: reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(3)).build()?,
            attempts: args.callback_attempts,
            backoff: args.callback_backoff,
            timeout: args.callback_timeout,
            in_flight: Semaphore::new(args.callback_concurrency.max(1)),
            shutdown: ctx.shutdown.clone(),
        };
        let sim = Arc::new(Sim {
            job_time_ms: AtomicU64::new(millis(args.job_time)),
            latency: args.latency,
            faults: args.faults,
            courier,
            jobs: Arc::new(Semaphore::new(args.max_jobs.max(1))),
            accounts: Mutex::default(),
            connections: AtomicU64::new(0),
            ctx: ctx.clone(),
        });
        ctx.spawn(Arc::clone(&sim).accept(listener));
        ctx.health.set_ready("jobserver", true);
        tracing::info!(%addr, "job server simulator listening");
        Ok(Self { addr, sim })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (to check that a client does not open needless sockets).
    pub fn connections(&self) -> u64 {
        self.sim.connections.load(Ordering::Relaxed)
    }

    /// Changes the job time for jobs started from now on (the benchmark holds requests longer).
    pub fn set_job_time(&self, d: Duration) {
        self.sim.job_time_ms.store(millis(d), Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Sim {
    async fn accept(self: Arc<Self>, listener: TcpListener) {
        let app = Router::new()
            .route("/start", post(start))
            .route("/", post(start))
            .with_state(Arc::clone(&self));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = self.ctx.shutdown.cancelled() => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    self.connections.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("jobserver_connections_total").increment(1);
                    self.ctx.spawn(Arc::clone(&self).serve(stream, app.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %switchboard_core::describe_error(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, app: Router) {
        let _ = stream.set_nodelay(true);
        // Dropped with the connection, releasing every account lock it held.
        let conn = Arc::new(Connection::default());
        let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
            req.extensions_mut().insert(Arc::clone(&conn));
            app.clone().oneshot(req)
        });
        let http = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(http);
        let result = tokio::select! {
            r = http.as_mut() => r,
            () = self.ctx.shutdown.cancelled() => {
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %switchboard_core::describe_error(&e), "job server connection ended with an error");
        }
    }

    fn account(&self, account: &str) -> Arc<Semaphore> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            accounts.entry(account.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(1))),
        )
    }

    fn job_time(&self) -> Duration {
        Duration::from_millis(self.job_time_ms.load(Ordering::Relaxed))
    }

    /// Sleeps `d` unless shutdown comes first (`false` then).
    async fn work(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.ctx.shutdown.cancelled() => false,
        }
    }

    /// Runs a job whose report goes to `callback`.
    async fn run_job(&self, account: String, id: String, callback: String) {
        let mut time = self.job_time();
        if roll(self.faults.slow_callback_rate) {
            time += self.faults.slow_callback_delay;
        }
        let started_at = now();
        if !self.work(time).await {
            return;
        }
        if roll(self.faults.missing_callback_rate) {
            metrics::counter!("jobserver_callbacks_total", "outcome" => "dropped").increment(1);
            tracing::info!(id, "injected fault: callback not sent");
            return;
        }
        let report = self.report(&account, id, started_at);
        let body = match serde_json::to_vec(&report) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return tracing::error!(error = %switchboard_core::describe_error(&e), "cannot encode a report");
            }
        };
        let copies = if roll(self.faults.duplicate_callback_rate) { 2 } else { 1 };
        let done = std::time::Instant::now();
        for _ in 0..copies {
            self.courier.deliver(&callback, body.clone()).await;
        }
        // Job end to the callback's answer, queueing for a delivery slot included.
        metrics::histogram!("jobserver_callback_seconds").record(done.elapsed().as_secs_f64());
    }

    fn report(&self, account: &str, id: String, started_at: String) -> Report {
        let failed = roll(self.faults.failed_job_rate);
        let proof = (!failed).then(|| proof(account, &id, &started_at));
        let state = if failed { "failed" } else { "completed" };
        Report { id, state, started_at: Some(started_at), proof }
    }
}

impl Connection {
    /// Takes `account`'s lock for this connection, queueing behind other connections.
    async fn enter(&self, sim: &Sim, account: &str) -> bool {
        if self.locked().contains_key(account) {
            return true;
        }
        let gauge = metrics::gauge!("jobserver_connections_waiting");
        gauge.increment(1);
        let permit = sim.account(account).acquire_owned().await;
        gauge.decrement(1);
        let Ok(permit) = permit else { return false };
        self.locked().insert(account.to_owned(), permit);
        true
    }

    fn locked(&self) -> MutexGuard<'_, HashMap<String, OwnedSemaphorePermit>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn start(
    State(sim): State<Arc<Sim>>,
    Extension(conn): Extension<Arc<Connection>>,
    body: Bytes,
) -> Response {
    let req = match serde_json::from_slice::<StartBody>(&body) {
        Ok(r) if !r.account.is_empty() => r,
        Ok(_) => return reject(StatusCode::BAD_REQUEST, "\"account\" must not be empty"),
        Err(e) => return reject(StatusCode::BAD_REQUEST, &format!("invalid start request: {e}")),
    };
    if !conn.enter(&sim, &req.account).await {
        return reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !sim.latency.is_zero() && !sim.work(sim.latency).await {
        return reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if roll(sim.faults.fail_start_rate) {
        return reject(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: start failed");
    }
    let id = job_id();
    if req.wait {
        metrics::counter!("jobserver_jobs_total", "mode" => "sync").increment(1);
        let started_at = now();
        if !sim.work(sim.job_time()).await {
            return reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
        return Json(sim.report(&req.account, id, started_at)).into_response();
    }
    let Some(callback) = req.callback.filter(|c| valid_callback(c)) else {
        return reject(StatusCode::BAD_REQUEST, "wait:false needs an absolute http(s) callback");
    };
    let Ok(permit) = Arc::clone(&sim.jobs).try_acquire_owned() else {
        metrics::counter!("jobserver_shed_total").increment(1);
        tracing::warn!(account = req.account, "too many running jobs; start shed");
        return reject(StatusCode::SERVICE_UNAVAILABLE, "too many running jobs");
    };
    metrics::counter!("jobserver_jobs_total", "mode" => "async").increment(1);
    let running = Json(Report { id: id.clone(), state: "running", started_at: None, proof: None });
    if roll(sim.faults.early_callback_rate) {
        // The callback lands before the start response leaves: the proxy's race, on purpose.
        sim.run_job(req.account, id, callback).await;
        drop(permit);
        return running.into_response();
    }
    let job_sim = Arc::clone(&sim);
    sim.ctx.spawn(async move {
        job_sim.run_job(req.account, id, callback).await;
        drop(permit);
    });
    running.into_response()
}

fn reject(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

fn valid_callback(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

/// A job id: hex of varying length (8 to 16 digits), like the real server's.
fn job_id() -> String {
    let len = rand::random_range(8..=16);
    let mut id = format!("{:016x}", rand::random::<u64>());
    id.truncate(len);
    id
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_timestamps_look_like_the_real_ones() {
        for _ in 0..100 {
            let id = job_id();
            assert!((8..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let t = now();
        assert_eq!(t.len(), "2015-06-29T15:28:55.497Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn callbacks_must_be_absolute_http_urls() {
        assert!(valid_callback("http://127.0.0.1:1/callback/x"));
        assert!(!valid_callback("/callback/x"));
        assert!(!valid_callback("ftp://h/x"));
    }
}
