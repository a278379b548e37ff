//! The admin HTTP surface every process exposes: `/healthz`, `/readyz`, `/metrics`.
//!
//! [`router`] is separate from [`serve`] so tests can call it with `oneshot`, and so
//! services with their own HTTP port can merge it into theirs.
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Health, Result};

/// `/healthz`, `/readyz` and `/metrics` for `health`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
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

/// Binds `addr`, returning the listener and the address actually bound (useful with port 0).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let local = l.local_addr()?;
    Ok((l, local))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
///
/// # Errors
/// The server fails (not on graceful shutdown).
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await?;
    Ok(())
}

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
    }
}
