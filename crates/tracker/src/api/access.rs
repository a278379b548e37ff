//! Access to the reports API and dashboard when `--api-token` is set.
//!
//! * API clients send `Authorization: Bearer <token>`.
//! * A browser opens `/?token=<token>` once: the answer is a redirect to `/` that sets the
//!   token as an `HttpOnly`, `SameSite=Strict` cookie, which the dashboard's own requests then
//!   carry. Without a token the dashboard answers a small page asking for it.
//! * Anything else is 401 with a JSON error. Tokens are compared in constant time and never
//!   logged.
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;
use switchboard_core::auth::token_matches;

use super::ApiState;

/// Name of the cookie that carries the token for the dashboard.
const COOKIE: &str = "switchboard_api_token";

const LOGIN: &str = r#"<!doctype html><html lang="en"><meta charset="utf-8">
<title>Tracker dashboard: token needed</title>
<main style="font-family:sans-serif;max-width:32rem;margin:4rem auto">
<h1>Token needed</h1>
<p>This dashboard is protected by the API token (<code>--api-token</code>).</p>
<form method="get" action="/"><label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Open the dashboard</button></form></main></html>"#;

/// The middleware: passes requests that present the token (or all, without `--api-token`).
pub(super) async fn check(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(expected) = s.token.as_deref() else { return next.run(req).await };
    if presented(req.headers()).is_some_and(|t| token_matches(t, expected)) {
        return next.run(req).await;
    }
    let page = matches!(req.uri().path(), "/" | "/dashboard");
    if page {
        let query = req.uri().query().unwrap_or("");
        let given = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token");
        if let Some((_, given)) = given
            && token_matches(&given, expected)
        {
            let cookie = format!("{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
            let mut res = Redirect::to(req.uri().path()).into_response();
            if let Ok(v) = cookie.parse() {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            return res;
        }
    }
    metrics::counter!("tracker_api_auth_failures_total").increment(1);
    if page {
        (StatusCode::UNAUTHORIZED, Html(LOGIN)).into_response()
    } else {
        let body = axum::Json(
            json!({"error": "missing or wrong API token (Authorization: Bearer <token>)"}),
        );
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
    }
}

/// The token of `Authorization: Bearer …` or of the dashboard cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}
