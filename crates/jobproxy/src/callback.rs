//! The callback endpoint: `POST /callback/{token}` with the job report as the body.
//!
//! The token (the node id and 112 random bits, minted before the job started; logged only
//! as its first 4 hex digits, the node id) finds the held request; the
//! report's `id` must then match the job started for it. Answers: 200 delivered, 202 parked
//! (arrived before the start response), 404 unknown token, 409 duplicate or id mismatch,
//! 410 the held request already ended, 400 not a job report, 413 larger than `--max-body`
//! (the held request then ends at once with a 502 saying so, instead of waiting for its
//! deadline). Every outcome is counted in `jobproxy_callbacks_total{outcome}`.
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use switchboard_core::redact;

use crate::job::ReportHead;
use crate::proxy::Proxy;
use crate::token::Token;
use crate::waiter::Delivery;

/// Handles one callback.
pub(crate) async fn receive(
    State(proxy): State<Arc<Proxy>>,
    Path(token): Path<String>,
    body: Body,
) -> Response {
    let Ok(token) = token.parse::<Token>() else {
        return answer(Delivery::Unknown, &token);
    };
    let body = match Limited::new(body, proxy.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let reason = format!(
                "the job server's report is larger than --max-body ({} bytes)",
                proxy.max_body
            );
            let held = proxy.waiters.refuse(token, reason.clone());
            metrics::counter!("jobproxy_callbacks_total", "outcome" => "oversized").increment(1);
            tracing::warn!(token = %redact::token(token), held, max_body = proxy.max_body, "callback body too large");
            let body = serde_json::json!({ "outcome": "oversized", "reason": reason });
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
        }
        // The job server went away mid-body: nothing to answer, it will retry.
        Err(e) => {
            tracing::info!(token = %redact::token(token), error = %switchboard_core::describe_error(&*e), "callback body could not be read");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    if token.node() != proxy.waiters.node() {
        return match &proxy.forwarder {
            Some(forwarder) => forwarder.forward(token, body).await,
            None => answer(Delivery::Unknown, &token),
        };
    }
    deliver(&proxy, token, body)
}

/// Hands a callback for one of this node's tokens to its held request.
pub(crate) fn deliver(proxy: &Proxy, token: Token, body: bytes::Bytes) -> Response {
    let head = match ReportHead::parse(&body) {
        Ok(head) => head,
        Err(reason) => {
            metrics::counter!("jobproxy_callbacks_total", "outcome" => "invalid").increment(1);
            tracing::warn!(token = %redact::token(token), reason, "callback body is not a job report");
            let body = serde_json::json!({ "outcome": "invalid", "reason": reason });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let outcome = proxy.waiters.callback(token, &head.id, body);
    answer(outcome, &token)
}

fn answer(outcome: Delivery, token: &dyn std::fmt::Display) -> Response {
    outcome.count();
    match outcome {
        Delivery::Delivered | Delivery::Parked => {
            tracing::debug!(token = %redact::token(token), outcome = outcome.label(), "callback accepted");
        }
        _ => {
            tracing::info!(token = %redact::token(token), outcome = outcome.label(), "callback rejected")
        }
    }
    outcome.into_response()
}

impl IntoResponse for Delivery {
    fn into_response(self) -> Response {
        let status = match self {
            Delivery::Delivered => StatusCode::OK,
            Delivery::Parked => StatusCode::ACCEPTED,
            Delivery::Unknown => StatusCode::NOT_FOUND,
            Delivery::Duplicate | Delivery::Mismatch => StatusCode::CONFLICT,
            Delivery::Gone => StatusCode::GONE,
        };
        (status, axum::Json(serde_json::json!({ "outcome": self.label() }))).into_response()
    }
}
