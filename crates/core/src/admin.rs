//! The admin HTTP surface every process exposes: `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! [`router`] is separate from [`serve`] so tests can call it with `oneshot`, and so
//! services with their own HTTP port can merge it into theirs.
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{Health, Result};

/// `/healthz`, `/readyz` and `/metrics` for `health`, and `/status` (the snapshots of
/// [`crate::status`]).
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(|| async { axum::Json(crate::status::all()) }))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let code = if health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(health.report()))
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
}

/// Connections the kernel completes and queues for `accept` on every listener of ours (it
/// clamps this to `net.core.somaxconn`, 4,096 on current kernels). tokio's default, 1,024,
/// overflowed when 10,000 clients connected within a second or two while the process was busy:
/// the kernel then drops their SYNs and each such client waits 1 s for the retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds and listens on `addr` with [`LISTEN_BACKLOG`] (`SO_REUSEADDR` on, as tokio's `bind`).
///
/// # Errors
/// The address cannot be bound.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds `addr`, returning the listener and the address actually bound (useful with port 0).
///
/// # Errors
/// [`crate::Error::Bind`], naming `addr`, when the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let l = listen(addr).map_err(|source| crate::Error::Bind { addr, source })?;
    let local = l.local_addr().map_err(|source| crate::Error::Bind { addr, source })?;
    Ok((l, local))
}

/// Serves `app` on `listener` (HTTPS with `tls`) until `shutdown` is cancelled, then finishes
/// in-flight requests.
///
/// # Errors
/// The server fails (not on graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<()> {
    crate::http::serve(
        listener,
        app,
        crate::http::Limits::ADMIN,
        tls,
        "admin",
        shutdown.cancelled_owned(),
    )
    .await
}

/// One `GET path` to the admin server at `addr` (an unspecified IP such as `0.0.0.0` means
/// this host's loopback): the status code and body. Used as a container health check, where
/// the image carries no HTTP client of its own.
///
/// # Errors
/// The server is unreachable, does not answer within `timeout`, or answers garbage.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        // HTTP/1.0: the server closes after the answer, so reading to the end is the framing.
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(PROBE_MAX_BYTES).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {addr} within {timeout:?}"),
        )
    })??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status =
        head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP answer from {addr}"),
            )
        })?;
    Ok((status, body.to_owned()))
}

/// Largest answer [`probe`] reads (the metrics page of a busy process fits easily).
const PROBE_MAX_BYTES: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String) {
        let res = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_ready_and_metrics_answer() {
        let health = Health::new();
        health.register("x");
        let app = router(health.clone());
        assert_eq!(get_path(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.set_ready("x", true);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);

        crate::telemetry::prometheus();
        metrics::counter!("core_admin_test_total").increment(3);
        let (code, body) = get_path(app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("core_admin_test_total 3"), "{body}");

        crate::status::publish("admin-test", serde_json::json!({"ok": true}));
        let (code, body) = get_path(router(health), "/status").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains(r#""admin-test":{"ok":true}"#), "{body}");
    }

    #[tokio::test]
    async fn probe_reads_status_and_body_over_a_real_socket() {
        let health = Health::new();
        health.register("x");
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router(health.clone()), None, stop.clone()));
        // 0.0.0.0 (how containers bind the admin server) is probed on loopback.
        let unspecified = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        let t = Duration::from_secs(5);
        let (code, body) = probe(unspecified, "/readyz", t).await.unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("\"ready\":false"), "{body}");
        health.set_ready("x", true);
        assert_eq!(probe(addr, "/readyz", t).await.unwrap().0, 200);
        assert_eq!(probe(addr, "/healthz", t).await.unwrap(), (200, "ok\n".to_owned()));
        stop.cancel();
        server.await.unwrap().unwrap();
        assert!(probe(addr, "/healthz", t).await.is_err(), "nothing listens any more");
    }
}
