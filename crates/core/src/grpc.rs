//! The accept side every gRPC listener of ours runs (presence status, control console; the
//! presence gateway, on its own HTTP/2 server, takes [`accept_limited`] and checks idleness
//! itself): the same limits as the HTTP listeners in [`crate::http`], applied under tonic.
//!
//! * **Idle timeout**: a connection that has had no gRPC call open for
//!   [`Limits::header_timeout`] (counted from accept, or from the end of its last call) is
//!   closed. That one rule covers silent connections, slow-drip clients that never finish a
//!   request, and idle keep-alive connections: HTTP/2 PINGs keep a connection's TCP alive but
//!   do not keep it open here. A connection holding a stream (a presence client, an attached
//!   agent) is never closed by it.
//! * **Connection cap**: at most [`Limits::max_connections`] at once; a connection beyond it is
//!   closed on accept (`grpc_connections_shed_total{server}`, a warning at most once a second).
//!
//! How: [`incoming`] wraps each accepted socket in a [`Conn`] whose read side carries one timer,
//! and [`StreamCountLayer`] (added to the tonic server with `.layer(..)`) counts the calls open
//! on that connection, found through the connect info tonic puts in every request. The timer
//! only looks at the count, so the hot path (frames of an open stream) costs nothing extra.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

pub use crate::http::Limits;

/// The flag every gRPC-serving role takes (flattened into its own flags).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct GrpcArgs {
    /// Close a connection that has had no call open for this long, counted from connecting or
    /// from the end of its last call (silent, slow and idle clients). Connections holding a
    /// stream are never closed by it.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
}

impl GrpcArgs {
    /// The limits of a listener that wants at most `max_connections` open (see
    /// [`Limits::new`]); the idle timeout travels as `header_timeout`.
    pub fn limits(&self, max_connections: usize, server: &'static str) -> Limits {
        Limits::new(self.idle_timeout, max_connections, server)
    }
}

/// Accepted connections of `listener`, at most `limits.max_connections` open at once (the rest
/// are closed on accept), each closed once it has held no call for `limits.header_timeout`.
/// Give the stream to tonic's `serve_with_incoming_shutdown`, and add [`StreamCountLayer`] to
/// the server, without which every connection counts as idle. `server` names the listener in
/// metrics and logs.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    server: &'static str,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let closed_idle = metrics::counter!("grpc_connections_idle_closed_total", "server" => server);
    accept_limited(listener, limits.max_connections, server).map(move |accepted| {
        let (stream, permit) = accepted?;
        let activity = Arc::new(Activity::new());
        let info = ConnInfo { tcp: stream.connect_info(), activity: Arc::clone(&activity) };
        Ok(Conn {
            stream,
            info,
            idle_after: limits.header_timeout,
            timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
            closed_idle: closed_idle.clone(),
            _permit: permit,
        })
    })
}

/// Accepted sockets of `listener`, each with one of `max_connections` permits held for as long
/// as the connection lives; a socket beyond the cap is closed on accept
/// (`grpc_connections_shed_total{server}`, a warning at most once a second). The cap under
/// [`incoming`], for servers that run their own HTTP/2 (the presence gateway).
pub fn accept_limited(
    listener: TcpListener,
    max_connections: usize,
    server: &'static str,
) -> impl Stream<Item = io::Result<(TcpStream, OwnedSemaphorePermit)>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max_connections));
    let shed = metrics::counter!("grpc_connections_shed_total", "server" => server);
    let last_shed_log = Arc::new(Mutex::new(None::<Instant>));
    TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Ok(s) => s,
            // The server logs accept errors and goes on accepting.
            Err(e) => return Some(Err(e)),
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shed.increment(1);
            let mut last = last_shed_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                *last = Some(Instant::now());
                tracing::warn!(server, peer = ?stream.peer_addr().ok(), max = max_connections, "too many connections; closing new ones");
            }
            return None;
        };
        // Calls are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        Some(Ok((stream, permit)))
    })
}

/// The remote address of the connection a request came on (plaintext or TLS), when it came
/// through [`incoming`]; tonic's own `Request::remote_addr` knows only its own connect info.
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    conn_info(request.extensions()).and_then(|i| i.tcp.remote_addr())
}

fn conn_info(ext: &http::Extensions) -> Option<&ConnInfo> {
    ext.get::<ConnInfo>().or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
}

/// What tonic stores in each request's extensions for a [`Conn`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

/// Calls open on one connection, and since when none has been.
#[derive(Debug)]
struct Activity {
    start: Instant,
    open: AtomicUsize,
    /// Milliseconds after `start` at which `open` last dropped to 0.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), open: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Held for as long as one call is open (request received → response body dropped).
struct CallGuard(Arc<Activity>);

impl CallGuard {
    fn open(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // Store the time before the count can read 0, so the timer never sees an idle
        // connection with a stale `idle_since`.
        self.0.idle_since_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection holding one of the listener's permits; see the module docs.
pub struct Conn {
    stream: TcpStream,
    info: ConnInfo,
    idle_after: std::time::Duration,
    /// Next time to look at the connection's activity.
    timer: Pin<Box<Sleep>>,
    closed_idle: metrics::Counter,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// `Some(error)` when the connection has been without a call for `idle_after`; otherwise
    /// re-arms the timer for the earliest moment it could be.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let a = &self.info.activity;
            let now = tokio::time::Instant::now();
            let next = if a.open.load(Ordering::Acquire) > 0 {
                now + self.idle_after
            } else {
                let idle_ms = a.now_ms().saturating_sub(a.idle_since_ms.load(Ordering::Acquire));
                let idle = std::time::Duration::from_millis(idle_ms);
                if idle >= self.idle_after {
                    self.closed_idle.increment(1);
                    return Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no call on this connection for {:?}", self.idle_after),
                    ));
                }
                now + (self.idle_after - idle)
            };
            self.timer.as_mut().reset(next);
        }
        None
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper keeps a read pending on every live connection, so the timer is always polled.
        if let Some(e) = self.check_idle(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Tower layer for the tonic server: counts the calls open on each [`Conn`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamCountLayer;

impl<S> tower::Layer<S> for StreamCountLayer {
    type Service = StreamCount<S>;

    fn layer(&self, inner: S) -> StreamCount<S> {
        StreamCount { inner }
    }
}

/// See [`StreamCountLayer`].
#[derive(Debug, Clone)]
pub struct StreamCount<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for StreamCount<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = conn_info(req.extensions()).map(|i| CallGuard::open(&i.activity));
        let response = self.inner.call(req);
        Box::pin(async move {
            let res = response.await?;
            Ok(res.map(|body| Counted { body, _guard: guard }))
        })
    }
}

/// A response body that keeps its call counted until it is dropped (for a stream: its end).
pub struct Counted<B> {
    body: B,
    _guard: Option<CallGuard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
