//! The reports API (`/api/*`, JSON) and the dashboard page (`/`), both read-only over the
//! read model.
//!
//! Query parameters: `from`, `to` (Unix ms or RFC 3339; default the last hour), `action`,
//! `subjectType`, `objectType`, `step` (seconds, a multiple of 60; series only), `limit`
//! (top only, 1–1000).
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::Clock;
use switchboard_store::Store;
use tokio::sync::Semaphore;

use crate::report::{self, Filter};
use crate::{audit, outbox};

const DASHBOARD: &str = include_str!("../assets/dashboard.html");
const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Longest range a report may cover (bounds the read-model rows a query scans).
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

/// Shared state of the reports API.
#[derive(Clone)]
pub struct ApiState {
    /// The read model.
    pub store: Store,
    /// Default `to` of a range.
    pub clock: Arc<dyn Clock>,
    /// `--api-token`: when set, every route needs it (see [`access`]).
    pub token: Option<Arc<str>>,
}

/// Reports and dashboard routes.
pub fn router(state: ApiState) -> Router {
    // A full scan: one at a time, so one client cannot keep the store busy with audits.
    let audit_slot = Arc::new(Semaphore::new(1));
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/api/series", get(series))
        .route("/api/top", get(top))
        .route("/api/breakdown", get(breakdown))
        .route("/api/uniques", get(uniques))
        .route("/api/summary", get(summary))
        .route("/api/audit", get(move |s| audit_report(s, audit_slot)))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::check))
        .with_state(state)
}

/// Raw query parameters, validated into a [`Filter`] by [`Params::filter`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
    subject_type: Option<String>,
    object_type: Option<String>,
    step: Option<i64>,
    limit: Option<i64>,
}

/// A report request the API refuses, or a store failure.
enum ApiError {
    BadRequest(String),
    Internal(crate::Error),
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(why) => {
                (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response()
            }
            Self::Internal(e) => {
                tracing::error!(error = %switchboard_core::describe_error(&e), "report failed");
                let body = Json(json!({"error": "report failed, see server logs"}));
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            }
        }
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

impl Params {
    fn filter(&self, now_ms: i64) -> Result<Filter, ApiError> {
        let to_ms = self.to.as_deref().map(|s| parse_time("to", s)).transpose()?.unwrap_or(now_ms);
        let from_ms = match self.from.as_deref() {
            Some(s) => parse_time("from", s)?,
            None => to_ms - DEFAULT_RANGE_MS,
        };
        if from_ms >= to_ms {
            return Err(ApiError::BadRequest("`from` must be before `to`".to_owned()));
        }
        if to_ms - from_ms > MAX_RANGE_MS {
            return Err(ApiError::BadRequest("range longer than 400 days".to_owned()));
        }
        Ok(Filter {
            from_ms,
            to_ms,
            action: self.action.clone(),
            subject_type: self.subject_type.clone(),
            object_type: self.object_type.clone(),
        })
    }
}

fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::BadRequest(format!("`{name}` must be Unix ms or RFC 3339, got {s:?}"))
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::BadRequest(format!("`{name}` out of range")))
}

/// Query parameters, or why axum could not parse them (answered as 400 by [`params`]).
type QueryParams = Result<Query<Params>, axum::extract::rejection::QueryRejection>;

/// A report answer: the range it covers and its rows under `key`.
fn answer(f: &Filter, key: &str, rows: impl serde::Serialize) -> ApiResult {
    let rows = serde_json::to_value(rows).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(json!({"from": f.from_ms, "to": f.to_ms, key: rows})))
}

fn params(q: QueryParams) -> Result<Params, ApiError> {
    q.map(|Query(p)| p).map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn series(State(s): State<ApiState>, q: QueryParams) -> ApiResult {
    let p = params(q)?;
    let f = p.filter(s.clock.now_ms())?;
    let step = p.step.unwrap_or(60);
    if step < 60 || step % 60 != 0 {
        return Err(ApiError::BadRequest(
            "`step` must be a positive multiple of 60 seconds".to_owned(),
        ));
    }
    let points = report::series(&s.store, &f, step * 1000).await?;
    Ok(Json(json!({"from": f.from_ms, "to": f.to_ms, "stepMs": step * 1000, "points": points})))
}

async fn top(State(s): State<ApiState>, q: QueryParams) -> ApiResult {
    let p = params(q)?;
    let f = p.filter(s.clock.now_ms())?;
    let limit = p.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("`limit` must be between 1 and 1000".to_owned()));
    }
    let rows = report::top(&s.store, &f, limit).await?;
    answer(&f, "top", rows)
}

async fn breakdown(State(s): State<ApiState>, q: QueryParams) -> ApiResult {
    let f = params(q)?.filter(s.clock.now_ms())?;
    let rows = report::breakdown(&s.store, &f).await?;
    answer(&f, "breakdown", rows)
}

async fn uniques(State(s): State<ApiState>, q: QueryParams) -> ApiResult {
    let f = params(q)?.filter(s.clock.now_ms())?;
    let rows = report::uniques(&s.store, &f).await?;
    answer(&f, "uniques", rows)
}

async fn summary(State(s): State<ApiState>) -> ApiResult {
    let total = report::total(&s.store).await?;
    let pending = outbox::pending_events(&s.store).await?;
    Ok(Json(json!({"folded": total, "pendingInOutbox": pending, "now": s.clock.now_ms()})))
}

async fn audit_report(State(s): State<ApiState>, slot: Arc<Semaphore>) -> Response {
    let Ok(_running) = slot.try_acquire() else {
        let body = Json(json!({"error": "an audit is already running; retry when it finishes"}));
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "5")], body).into_response();
    };
    match audit::audit(&s.store).await {
        Ok(a) => Json(json!({"consistent": a.is_consistent(), "audit": a})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD))
}

mod access;
#[cfg(test)]
mod tests;
