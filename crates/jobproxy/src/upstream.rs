//! Upstream connections to the job server: **one keep-alive HTTP/1.1 connection per account**.
//!
//! The job server serves one connection at a time per account and queues the others, so
//! opening a socket per request would serialise whole jobs behind each other (50 × 0.5 s).
//! Instead each account gets a *link*: a task owning a single connection, fed by a bounded
//! queue. Asynchronous starts (`wait:false`) answer in well under a millisecond on loopback, so
//! 50 starts go out back to back on that one connection while the jobs run in parallel on the
//! server. A link closes its connection after `idle` without work, so other clients of the same
//! account are not locked out of the job server by an idle socket of ours.
//!
//! Links are bounded (`max_links`): each holds a semaphore permit until its task ends, and a
//! start for a new account while none is free is shed, so a client inventing account names
//! cannot exhaust the proxy's file descriptors.
//!
//! Starts are not idempotent: a request is retried on a fresh connection only when hyper hands
//! it back unsent (the keep-alive connection was found closed); once written, an error is final.
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::failure::Failure;
use crate::{Error, Result};

/// Where the job server's `/start` lives.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    /// Parses `http://host[:port][/base]`; `/start` is appended unless the path ends with it.
    ///
    /// # Errors
    /// Not an absolute `http://` URL with a host.
    pub fn parse(url: &str) -> Result<Self> {
        let shown = switchboard_core::redact::url(url);
        let bad = |why: &str| Error::config(format!("--upstream {shown:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str().is_none() {
            return Err(bad(&format!("no scheme; write it as http://{shown}")));
        }
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// upstreams are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            // It would travel upstream in the Host header, and the job server has no login.
            return Err(bad("credentials in the URL are not supported"));
        }
        let base = uri.path().trim_end_matches('/');
        let path = if base.ends_with("/start") { base.to_owned() } else { format!("{base}/start") };
        Ok(Self {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path,
        })
    }
}

/// Tuning of the per-account links.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkConfig {
    /// Starts waiting per account before new ones are shed.
    pub queue: usize,
    /// Links (one connection each) open at once; a new account beyond this is shed.
    pub max_links: usize,
    /// Close an account's connection after this long without work.
    pub idle: Duration,
    /// Longest one start exchange (connect included) may take.
    pub timeout: Duration,
    /// Largest response body read from the job server.
    pub max_body: usize,
}

/// The job server's answer to a start.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Content type, passed on for `wait:false` requests.
    pub content_type: Option<HeaderValue>,
    /// The body, verbatim.
    pub body: Bytes,
}

struct Call {
    body: Bytes,
    reply: oneshot::Sender<Result<Answer, Failure>>,
    /// When it was queued: the wait behind the account's earlier starts is measured apart.
    queued: Instant,
}

struct Link {
    id: u64,
    tx: mpsc::Sender<Call>,
}

/// All links to one job server.
pub(crate) struct Upstream {
    target: Target,
    config: LinkConfig,
    // A std Mutex: held for a map lookup and a `try_send`, never across an await.
    links: Mutex<HashMap<String, Link>>,
    // One permit per live link task, so distinct accounts cannot exhaust file descriptors.
    link_limit: Arc<Semaphore>,
    next_id: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

type Sender = SendRequest<Full<Bytes>>;

impl Upstream {
    /// Links to `target`; link tasks are spawned on `tasks` and retire on `shutdown`.
    pub fn new(
        target: Target,
        config: LinkConfig,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            target,
            config,
            links: Mutex::default(),
            link_limit: Arc::new(Semaphore::new(config.max_links)),
            next_id: AtomicU64::new(0),
            tasks,
            shutdown,
        })
    }

    /// Sends one start request for `account` over that account's connection.
    ///
    /// # Errors
    /// The account's queue is full or no link is free ([`Failure::Shed`]), or the exchange failed.
    pub async fn start(self: &Arc<Self>, account: &str, body: Bytes) -> Result<Answer, Failure> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(account, Call { body, reply, queued: Instant::now() })?;
        rx.await.map_err(|_| Failure::Upstream("upstream link stopped".into()))?
    }

    fn enqueue(self: &Arc<Self>, account: &str, mut call: Call) -> Result<(), Failure> {
        let mut links = self.lock();
        // Twice at most: a link that just retired has a closed queue and is replaced once.
        for _ in 0..2 {
            let link = match links.entry(account.to_owned()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.spawn_link(account)?),
            };
            match link.tx.try_send(call) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("jobproxy_shed_total", "bound" => "account_queue")
                        .increment(1);
                    return Err(Failure::Shed("account_queue"));
                }
                Err(mpsc::error::TrySendError::Closed(c)) => {
                    links.remove(account);
                    call = c;
                }
            }
        }
        Err(Failure::Upstream("no upstream link could be started".into()))
    }

    fn spawn_link(self: &Arc<Self>, account: &str) -> Result<Link, Failure> {
        let Ok(permit) = Arc::clone(&self.link_limit).try_acquire_owned() else {
            metrics::counter!("jobproxy_shed_total", "bound" => "links").increment(1);
            return Err(Failure::Shed("links"));
        };
        let (tx, rx) = mpsc::channel(self.config.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(Arc::clone(self).drive(account.to_owned(), id, rx, permit));
        Ok(Link { id, tx })
    }

    /// Serves one account's queue; `_permit` is the link's slot, freed when this returns.
    async fn drive(
        self: Arc<Self>,
        account: String,
        id: u64,
        mut rx: mpsc::Receiver<Call>,
        _permit: OwnedSemaphorePermit,
    ) {
        metrics::gauge!("jobproxy_upstream_links").increment(1);
        let mut conn: Option<Sender> = None;
        loop {
            let call = tokio::select! {
                biased;
                call = rx.recv() => match call {
                    Some(call) => call,
                    None => break,
                },
                () = self.shutdown.cancelled() => {
                    if self.retire(&account, id, &mut rx) { break }
                    continue;
                }
                () = tokio::time::sleep(self.config.idle) => {
                    if self.retire(&account, id, &mut rx) { break }
                    continue;
                }
            };
            if call.reply.is_closed() {
                // The client left while queued: do not start a job nobody waits for.
                metrics::counter!("jobproxy_upstream_skipped_total").increment(1);
                continue;
            }
            let began = Instant::now();
            metrics::histogram!("jobproxy_upstream_queue_seconds")
                .record(began.duration_since(call.queued).as_secs_f64());
            let answer = match tokio::time::timeout(
                self.config.timeout,
                self.exchange(&mut conn, call.body),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => {
                    // A half-read response leaves the connection unusable.
                    conn = None;
                    Err(Failure::StartTimeout(self.config.timeout))
                }
            };
            metrics::histogram!("jobproxy_upstream_start_seconds")
                .record(began.elapsed().as_secs_f64());
            let _ = call.reply.send(answer);
        }
        metrics::gauge!("jobproxy_upstream_links").decrement(1);
        tracing::debug!(account, "upstream link retired");
    }

    /// Removes this link if it has nothing queued; `true` when it may stop.
    fn retire(&self, account: &str, id: u64, rx: &mut mpsc::Receiver<Call>) -> bool {
        let mut links = self.lock();
        // Senders only send while holding this lock, so "empty" cannot change under us.
        if !rx.is_empty() {
            return false;
        }
        if links.get(account).is_some_and(|l| l.id == id) {
            links.remove(account);
        }
        rx.close();
        true
    }

    async fn exchange(&self, conn: &mut Option<Sender>, body: Bytes) -> Result<Answer, Failure> {
        let mut req = self.request(body)?;
        for _ in 0..2 {
            let sender = match conn {
                Some(s) if !s.is_closed() => s,
                _ => conn.insert(self.connect().await?),
            };
            if sender.ready().await.is_err() {
                *conn = None;
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let answer = self.read(res).await;
                    if answer.is_err() {
                        *conn = None;
                    }
                    return answer;
                }
                Err(mut e) => {
                    *conn = None;
                    match e.take_message() {
                        // Never written: safe to try once more on a fresh connection.
                        Some(unsent) => req = unsent,
                        None => return Err(Failure::Upstream(format!("{}", e.into_error()))),
                    }
                }
            }
        }
        Err(Failure::Upstream("the job server closed the connection twice".into()))
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, Failure> {
        Request::post(self.target.path.as_str())
            .header(HOST, self.target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Failure::Upstream(format!("building the start request: {e}")))
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let t = &self.target;
        let stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| Failure::Upstream(format!("connecting to {}: {e}", t.authority)))?;
        // Small request/response pairs: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Upstream(format!("handshake with {}: {e}", t.authority)))?;
        metrics::counter!("jobproxy_upstream_connects_total").increment(1);
        metrics::gauge!("jobproxy_upstream_connections").increment(1);
        self.tasks.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %switchboard_core::describe_error(&e), "upstream connection ended with an error");
            }
            metrics::gauge!("jobproxy_upstream_connections").decrement(1);
        });
        Ok(sender)
    }

    async fn read(&self, res: http::Response<hyper::body::Incoming>) -> Result<Answer, Failure> {
        let status = res.status();
        let content_type = res.headers().get(CONTENT_TYPE).cloned();
        let body = Limited::new(res.into_body(), self.config.max_body)
            .collect()
            .await
            .map_err(|e| Failure::Upstream(format!("reading the start response: {e}")))?
            .to_bytes();
        Ok(Answer { status, content_type, body })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Link>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_a_start_path() {
        let t = Target::parse("http://jobs:9000").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("jobs", 9000, "/start"));
        let t = Target::parse("http://127.0.0.1/api/").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/api/start"));
        assert_eq!(Target::parse("http://h:1/start").unwrap().path, "/start");
        assert!(Target::parse("https://h").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
