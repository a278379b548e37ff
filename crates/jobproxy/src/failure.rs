//! Why a proxied request did not get its job report, mapped once to an HTTP answer with a
//! JSON body `{"error": "<class>", "reason": "<details>"}` and counted in
//! `jobproxy_requests_total{outcome}`.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A request the proxy could not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The client's request is malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A bound was reached and the request was shed (503); names the bound.
    #[error("overloaded: {0}")]
    Shed(&'static str),
    /// The proxy is shutting down and takes no new jobs (503).
    #[error("shutting down")]
    Draining,
    /// The job server failed or answered something unusable (502).
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The job server did not answer the start in time (504).
    #[error("upstream did not answer the start within {0:?}")]
    StartTimeout(std::time::Duration),
    /// No callback arrived before the deadline (504).
    #[error("no callback within {0:?}")]
    CallbackTimeout(std::time::Duration),
}

impl Failure {
    /// Short class, the `error` field and the metric label.
    pub fn class(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Shed(_) => "shed",
            Self::Draining => "draining",
            Self::Upstream(_) => "upstream_error",
            Self::StartTimeout(_) => "upstream_timeout",
            Self::CallbackTimeout(_) => "callback_timeout",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Shed(_) | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::StartTimeout(_) | Self::CallbackTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let class = self.class();
        metrics::counter!("jobproxy_requests_total", "outcome" => class).increment(1);
        match &self {
            Self::Shed(bound) => tracing::warn!(bound, "request shed"),
            Self::BadRequest(_) => tracing::debug!(error = %self, "bad request"),
            _ => tracing::info!(error = %self, "request failed"),
        }
        let body = serde_json::json!({ "error": class, "reason": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn failures_become_json_with_the_right_status() {
        let res = Failure::Upstream("connection refused".into()).into_response();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "upstream_error");
        assert!(v["reason"].as_str().unwrap().contains("connection refused"));
        let timeout = Failure::CallbackTimeout(std::time::Duration::from_secs(1));
        assert_eq!(timeout.into_response().status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
