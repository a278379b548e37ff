//! Why the collector refused a request, mapped once to an HTTP answer with a JSON body.
//!
//! Every refusal is an expected outcome (a client bug, an oversized body, a full pipeline),
//! not a server error, so each is a variant here rather than an opaque error.
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::event::Problem;

/// At most this many problems are listed in a 400 answer; the total is always given.
const MAX_LISTED_PROBLEMS: usize = 100;

/// A refused collector request.
#[derive(Debug)]
pub enum Rejection {
    /// The (decompressed) body exceeds the limit: 413.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// More events in one request than allowed: 413.
    TooManyEvents {
        /// The limit.
        max: usize,
    },
    /// The body is not JSON / NDJSON, or has no event: 400.
    Malformed(String),
    /// `Content-Encoding` other than identity or gzip: 415.
    UnsupportedEncoding(String),
    /// Some events break the schema; nothing of the request was accepted: 400.
    Invalid(Vec<Problem>),
    /// The journal queue is full: 503 with `Retry-After`.
    Saturated,
    /// The journal failed to store the events (bus or store down): 503 with `Retry-After`.
    Unavailable(String),
}

impl Rejection {
    /// Status code of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } | Self::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Saturated | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Short label for the `tracker_collector_rejected_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedEncoding(_) => "encoding",
            Self::Invalid(_) => "invalid",
            Self::Saturated => "saturated",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::TooLarge { limit } => {
                json!({"error": format!("body larger than {limit} bytes (after decompression)")})
            }
            Self::TooManyEvents { max } => {
                json!({"error": format!("more than {max} events in one request")})
            }
            Self::Malformed(why) => json!({"error": format!("malformed body: {why}")}),
            Self::UnsupportedEncoding(enc) => {
                json!({"error": format!("unsupported Content-Encoding {enc:?} (use gzip or none)")})
            }
            Self::Invalid(problems) => json!({
                "error": "invalid events; nothing was accepted",
                "problemCount": problems.len(),
                "problems": &problems[..problems.len().min(MAX_LISTED_PROBLEMS)],
            }),
            Self::Saturated => json!({"error": "pipeline saturated, retry later"}),
            // The cause is logged by the journal; clients get a generic message.
            Self::Unavailable(why) => {
                tracing::debug!(%why, "answering 503: journal unavailable");
                json!({"error": "events could not be stored, retry later"})
            }
        };
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}
