//! The collector's HTTP surface: `POST /track` (one event) and `POST /track/batch` (JSON
//! array or NDJSON, optionally gzip). Answers 202 only once the journal has stored the batch.
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::batch::{self, Limits};
use crate::event::Validator;
use crate::journal::Journal;
use crate::rejection::Rejection;

/// Everything a collector request needs.
#[derive(Clone)]
pub struct CollectorState {
    /// Schema and clock checks.
    pub validator: Validator,
    /// Body and batch limits.
    pub limits: Limits,
    /// Where accepted events are stored.
    pub journal: Journal,
}

/// The collector routes, separate from serving so tests can drive them with `oneshot`.
pub fn router(state: CollectorState) -> Router {
    Router::new()
        .route(
            "/track",
            post(|s: State<Arc<CollectorState>>, h: HeaderMap, b: Body| {
                accept(s, h, b, Shape::One)
            }),
        )
        .route(
            "/track/batch",
            post(|s: State<Arc<CollectorState>>, h: HeaderMap, b: Body| {
                accept(s, h, b, Shape::Batch)
            }),
        )
        .with_state(Arc::new(state))
}

#[derive(Clone, Copy)]
enum Shape {
    One,
    Batch,
}

async fn accept(
    State(s): State<Arc<CollectorState>>,
    headers: HeaderMap,
    body: Body,
    shape: Shape,
) -> Result<(StatusCode, Json<Value>), Rejection> {
    let started = Instant::now();
    let outcome = accept_inner(&s, &headers, body, shape).await;
    let status = match &outcome {
        Ok(_) => StatusCode::ACCEPTED,
        Err(r) => {
            metrics::counter!("tracker_collector_rejected_total", "reason" => r.reason())
                .increment(1);
            r.status()
        }
    };
    metrics::histogram!("tracker_collector_request_seconds", "status" => status.as_str().to_owned())
        .record(started.elapsed().as_secs_f64());
    outcome
}

async fn accept_inner(
    s: &CollectorState,
    headers: &HeaderMap,
    body: Body,
    shape: Shape,
) -> Result<(StatusCode, Json<Value>), Rejection> {
    let raw = read_limited(body, s.limits.max_body_bytes).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let plain = batch::decompress(encoding, raw, s.limits.max_body_bytes)?;
    let values = match shape {
        Shape::One => batch::parse_single(&plain)?,
        Shape::Batch => batch::parse_batch(&plain, s.limits.max_events)?,
    };
    let events = batch::validate(&values, &s.validator)?;
    // The answer is made first: the journal takes the events (a folding sink keeps them).
    let accepted = events.len();
    let body = match shape {
        Shape::One => json!({"id": events[0].id}),
        Shape::Batch => json!({
            "accepted": accepted,
            "ids": events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        }),
    };
    s.journal.append(events, s.validator.now_ms()).await?;
    metrics::counter!("tracker_collector_events_accepted_total").increment(accepted as u64);
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Reads at most `limit` bytes of the (possibly compressed) body.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Rejection> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            Rejection::TooLarge { limit }
        } else {
            Rejection::Malformed(format!("reading body: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests;
