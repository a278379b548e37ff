//! The callback endpoint: `POST /callback/{token}` with the job report as the body.
//!
//! The token (128 random bits, minted before the job started) finds the held request; the
//! report's `id` must then match the job started for it. Answers: 200 delivered, 202 parked
//! (arrived before the start response), 404 unknown token, 409 duplicate or id mismatch,
//! 410 the held request already ended, 400 not a job report. Every outcome is counted in
//! `jobproxy_callbacks_total{outcome}`.
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::job::ReportHead;
use crate::proxy::Proxy;
use crate::token::Token;
use crate::waiter::Delivery;

/// Handles one callback.
pub(crate) async fn receive(
    State(proxy): State<Arc<Proxy>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(token) = token.parse::<Token>() else {
        return answer(Delivery::Unknown, &token);
    };
    let head = match ReportHead::parse(&body) {
        Ok(head) => head,
        Err(reason) => {
            metrics::counter!("jobproxy_callbacks_total", "outcome" => "invalid").increment(1);
            tracing::warn!(%token, reason, "callback body is not a job report");
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
            tracing::debug!(%token, outcome = outcome.label(), "callback accepted");
        }
        _ => tracing::info!(%token, outcome = outcome.label(), "callback rejected"),
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
