//! The HTTP server every HTTP listener of ours runs (admin, tracker collector and API,
//! jobproxy): an axum router on hyper, with the limits that keep slow and idle clients from
//! holding file descriptors.
//!
//! * **Header timeout**: a connection must deliver a complete request head within
//!   [`Limits::header_timeout`] of being accepted or of its previous response; the same timer
//!   is the keep-alive idle timeout. Silent, idle and slow-drip connections are closed.
//!   A request being handled (a held jobproxy request, a large upload) is not affected.
//! * **Connection cap**: at most [`Limits::max_connections`] at once, below the file limit; a
//!   connection beyond it is closed at once (`http_connections_shed_total{server}` and a log
//!   line at most once a second), so a flood is refused rather than stalling the listener.
//! * **Graceful stop**: on `shutdown` the listener closes, idle connections are closed and
//!   in-flight requests finish.
//! * **Front** ([`Front`], optional): serves the requests it knows before hyper, in less
//!   memory per connection, and hands the connection to the router at the first it does not.
//! * **Lingering close** (`linger`): a closed connection is drained briefly, so an early
//!   answer (413 to an oversized upload) reaches the client instead of a TCP reset; a 413
//!   over HTTP/1 says `connection: close`, so the client does not reuse the connection.
mod front;
mod linger;

pub use front::{Front, Io, Served};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head (first byte included), and the keep-alive idle
    /// timeout between requests.
    pub header_timeout: Duration,
    /// Open connections at most; more are closed on accept.
    pub max_connections: usize,
}

impl Limits {
    /// `header_timeout`, and a cap of `max_connections` lowered to [`file_budget`] when the
    /// process may not open that many files (logged, so a low `ulimit -n` is visible rather
    /// than an EMFILE loop at the worst moment).
    pub fn new(header_timeout: Duration, max_connections: usize, server: &'static str) -> Self {
        let mut max = max_connections.max(1);
        if let Some(budget) = file_budget()
            && budget < max
        {
            tracing::warn!(
                server,
                wanted = max,
                capped = budget,
                "connection cap lowered below the open-file limit (raise `ulimit -n` for more)"
            );
            max = budget;
        }
        Self { header_timeout, max_connections: max }
    }

    /// The admin server: a few scrapers and probes.
    pub const ADMIN: Self = Self { header_timeout: DEFAULT_HEADER_TIMEOUT, max_connections: 256 };
}

/// Default of `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The flag every HTTP-serving role takes (flattened into its own flags).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HttpArgs {
    /// Close a connection that has not sent a complete request head within this long of
    /// connecting or of its previous response (idle keep-alive, silent or slow clients).
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
}

impl HttpArgs {
    /// The limits of a listener that wants at most `max_connections` open (see
    /// [`Limits::new`]).
    pub fn limits(&self, max_connections: usize, server: &'static str) -> Limits {
        Limits::new(self.header_timeout, max_connections, server)
    }
}

/// Connections a listener may hold and still leave descriptors for everything else the process
/// opens (store and bus connections, upstream links, files): the soft `RLIMIT_NOFILE` less a
/// quarter of it, at most 1,024. `None` where the limit cannot be read (not Linux) or is
/// unlimited.
pub fn file_budget() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(soft.saturating_sub((soft / 4).min(1024)).max(1))
}

/// Serves `app` on `listener` until `shutdown` completes, then closes idle connections and
/// waits for in-flight requests. `server` names the listener in metrics and logs.
///
/// # Errors
/// None at present: accept errors (e.g. out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    server: &'static str,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    serve_with_front(listener, None, app, limits, tls, server, shutdown).await
}

/// [`serve`], with `front` serving each connection first and handing it to `app` at the
/// first request it leaves to the router (see [`Front`]).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_front(
    listener: TcpListener,
    front: Option<Arc<dyn Front>>,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    server: &'static str,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let app = app.layer(axum::middleware::from_fn(close_after_413));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Shared by every connection task: built once, not cloned per accepted connection.
    let http1 = Arc::new(http1);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Tells front-served connections to stop reading requests (hyper's get `graceful`).
    let stop = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let shed = metrics::counter!("http_connections_shed_total", "server" => server);
    let open = metrics::gauge!("http_connections_open", "server" => server);
    let mut last_shed_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; connections that
                    // finish free descriptors.
                    tracing::warn!(server, error = %crate::error::describe(&e), "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shed.increment(1);
            if last_shed_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_shed_log = Some(Instant::now());
                tracing::warn!(server, %peer, max = limits.max_connections, "too many connections; closing new ones");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            front: front.clone(),
            builder: Arc::clone(&builder),
            http1: Arc::clone(&http1),
            limits,
            stop: stop.clone(),
            watcher: graceful.watcher(),
        };
        let (tls, open) = (tls.clone(), open.clone());
        open.increment(1.0);
        let over_tls = tls.is_some();
        let task = async move {
            // The handshake, or the first byte, must come within the header timeout: hyper's
            // header timer (and a front's) starts once bytes arrive, and the HTTP/1-or-2
            // detection before it waits without a limit.
            let io: Option<Box<dyn Io>> = if let Some(acceptor) = tls {
                // Boxed: rustls's handshake state would otherwise stay in the task's state.
                let handshake =
                    tokio::time::timeout(limits.header_timeout, Box::pin(acceptor.accept(stream)));
                match handshake.await {
                    Ok(Ok(stream)) => Some(Box::new(stream)),
                    _ => None,
                }
            } else {
                let mut first = [0u8; 1];
                let spoke =
                    tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await;
                matches!(spoke, Ok(Ok(n)) if n > 0).then(|| Box::new(stream) as Box<dyn Io>)
            };
            if let Some(io) = io {
                conn.serve(io, over_tls, peer).await;
            }
            open.decrement(1.0);
            drop(permit);
        };
        tokio::spawn(task);
    }
    drop(listener);
    stop.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// A 413 is usually sent before the request body is read, so the connection cannot be
/// reused; saying `connection: close` (HTTP/1 only: HTTP/2 forbids the header) keeps the
/// client from pooling it and sending its next request into the lingering close.
async fn close_after_413(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let http1 = req.version() <= http::Version::HTTP_11;
    let mut res = next.run(req).await;
    if http1 && res.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        res.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    res
}

/// What one connection's task needs.
struct Connection {
    app: Router,
    front: Option<Arc<dyn Front>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    http1: Arc<hyper::server::conn::http1::Builder>,
    limits: Limits,
    stop: CancellationToken,
    /// Held until the connection is served, so the graceful shutdown waits for it.
    watcher: Watcher,
}

impl Connection {
    /// Serves `io` (front first, if any, then hyper) and closes it with a lingering close.
    async fn serve(self, io: Box<dyn Io>, over_tls: bool, peer: std::net::SocketAddr) {
        let Self { app, front, builder, http1, limits, stop, watcher } = self;
        let io = match front {
            None => io,
            Some(front) => match front.serve(io, limits, stop).await {
                Served::Closed(io) => {
                    drop(watcher);
                    linger::linger(io).await;
                    return;
                }
                Served::Handoff(io, read) if read.is_empty() => io,
                Served::Handoff(io, read) => Box::new(front::Rewind::new(io, read)),
            },
        };
        let (io, back) = linger::Reclaim::new(io);
        let service = TowerToHyperService::new(app);
        // Boxed: hyper's connection state is allocated only for connections that reach it,
        // not in every connection task (a front-served one stays small).
        let served: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = if over_tls {
            // ALPN offers HTTP/1.1 only.
            let conn = watcher.watch(http1.serve_connection(TokioIo::new(io), service));
            Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %crate::error::describe(&e), "connection ended with an error");
                }
            })
        } else {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let conn = watcher.watch(conn.into_owned());
            Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %crate::error::describe(&*e), "connection ended with an error");
                }
            })
        };
        served.await;
        // Back once hyper (or an upgraded connection) is done with it.
        if let Ok(io) = back.await {
            linger::linger(io).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server whose one route takes bodies of at most 1 KiB.
    async fn upload_limited_to_1k() -> std::net::SocketAddr {
        let app = Router::new()
            .route("/", axum::routing::post(|_: axum::body::Bytes| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(1024));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits::new(DEFAULT_HEADER_TIMEOUT, 16, "test");
        tokio::spawn(serve(listener, app, limits, None, "test", std::future::pending()));
        addr
    }

    /// An upload far over the body limit is refused 413 before the body is read; the client,
    /// still writing, must be able to finish writing and then read that answer. Without the
    /// lingering close its writes fail with a reset, and HTTP clients that see the write fail
    /// (hyper's, so reqwest's) report a broken connection instead of the 413.
    #[tokio::test]
    async fn an_early_413_reaches_a_client_still_sending_its_body() {
        let addr = upload_limited_to_1k().await;
        for _ in 0..5 {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let body = vec![b'x'; 16 << 20];
            let head =
                format!("POST / HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", body.len());
            client.write_all(head.as_bytes()).await.unwrap();
            client.write_all(&body).await.expect("the server drains what it did not read");
            let mut answer = Vec::new();
            let read = client.read_to_end(&mut answer).await;
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 413"), "{read:?}: {text:?}");
        }
    }

    /// A client on a loaded machine may stall mid-upload for longer than a scheduler tick:
    /// the lingering close must wait out such a pause, or the client's next write meets a
    /// closed socket, the kernel answers with a reset and the 413 already in the client's
    /// receive buffer is destroyed (reqwest reports `IncompleteMessage`). The early 413
    /// also says `connection: close`, so the client does not pool a connection that the
    /// server is closing.
    #[tokio::test]
    async fn an_early_413_survives_a_client_that_pauses_mid_upload() {
        let addr = upload_limited_to_1k().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = vec![b'x'; 1 << 20];
        let head = format!("POST / HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", body.len());
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body[..4096]).await.unwrap();
        // The stall is the stimulus here, not a synchronization: a pause longer than the
        // old 200 ms quiet period, shorter than the one a loaded client is allowed.
        tokio::time::sleep(linger::QUIET / 2).await;
        client.write_all(&body[4096..]).await.expect("the server still drains after a pause");
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 413"), "{read:?}: {text:?}");
        assert!(text.contains("connection: close"), "{text:?}");
    }
}
