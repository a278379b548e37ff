//! Reports API tests: fold a known sample, then compare every report with a count computed
//! here from the same events.
use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use switchboard_core::ManualClock;
use tower::ServiceExt;

use super::*;
use crate::readmodel::tests::{T0, sample, sqlite_store};
use crate::readmodel::{DAY_MS, fold_batch};

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let res = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn app_with_sample() -> (Router, Vec<crate::event::Event>, tempfile::TempDir) {
    let (store, dir) = sqlite_store().await;
    let events = sample(400);
    fold_batch(&store, &events).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0 + 2 * DAY_MS));
    (router(ApiState { store, clock, token: None }), events, dir)
}

#[tokio::test]
async fn series_matches_a_direct_count() {
    let (app, events, _dir) = app_with_sample().await;
    let (from, to) = (T0 - 60_000, T0 + 10 * 60_000);
    let (status, body) =
        get_json(&app, &format!("/api/series?from={from}&to={to}&subjectType=video")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts_ms >= from && e.ts_ms < to && e.subject_type == "video")
    {
        *want.entry((e.ts_ms / 60_000 * 60_000, e.action.clone())).or_default() += 1;
    }
    let got: BTreeMap<(i64, String), i64> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (p["t"].as_i64().unwrap(), p["action"].as_str().unwrap().to_owned()),
                p["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test]
async fn top_breakdown_and_uniques_match_direct_counts() {
    let (app, events, _dir) = app_with_sample().await;
    // Day reports cover whole UTC days: ask for exactly the first one.
    let from = T0 / DAY_MS * DAY_MS;
    let to = from + DAY_MS;
    let day0: Vec<_> = events.iter().filter(|e| e.ts_ms >= from && e.ts_ms < to).collect();
    assert!(day0.len() < events.len());

    let (_, body) =
        get_json(&app, &format!("/api/top?from={from}&to={to}&action=view&limit=2")).await;
    let mut per_subject: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for e in day0.iter().filter(|e| e.action == "view") {
        *per_subject.entry((e.subject_type.clone(), e.subject_id)).or_default() += 1;
    }
    let mut ranked: Vec<_> = per_subject.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = body["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    for (row, ((t, id), n)) in top.iter().zip(&ranked) {
        assert_eq!(
            (row["subjectType"].as_str().unwrap(), row["subjectId"].as_i64().unwrap()),
            (t.as_str(), *id)
        );
        assert_eq!(row["count"].as_i64().unwrap(), *n);
    }

    let (_, body) = get_json(&app, &format!("/api/breakdown?from={from}&to={to}")).await;
    let sum: i64 =
        body["breakdown"].as_array().unwrap().iter().map(|r| r["count"].as_i64().unwrap()).sum();
    assert_eq!(sum, day0.len() as i64);

    let (_, body) =
        get_json(&app, &format!("/api/uniques?from={from}&to={to}&objectType=user")).await;
    let distinct: BTreeSet<i64> =
        day0.iter().filter(|e| e.object_type == "user").map(|e| e.object_id).collect();
    let rows = body["uniques"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["objects"].as_i64().unwrap(), distinct.len() as i64);
    assert_eq!(rows[0]["dayMs"].as_i64().unwrap(), T0 / DAY_MS * DAY_MS);
}

#[tokio::test]
async fn summary_and_audit() {
    let (app, events, _dir) = app_with_sample().await;
    let (_, body) = get_json(&app, "/api/summary").await;
    assert_eq!(body["folded"].as_i64().unwrap(), events.len() as i64);
    assert_eq!(body["pendingInOutbox"], 0);
    let (_, body) = get_json(&app, "/api/audit").await;
    assert_eq!(body["consistent"], true, "{body}");
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_reason() {
    let (app, _, _dir) = app_with_sample().await;
    for uri in [
        "/api/series?from=10&to=5",
        "/api/series?from=yesterday",
        "/api/series?step=30",
        "/api/top?limit=0",
        "/api/top?bogus=1",
        "/api/uniques?from=0&to=99999999999999",
    ] {
        let (status, body) = get_json(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"].is_string(), "{uri}: {body}");
    }
    let (status, _) =
        get_json(&app, "/api/series?from=2023-11-14T22:00:00Z&to=2023-11-14T23:00:00Z").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn dashboard_is_self_contained() {
    let (app, _, _dir) = app_with_sample().await;
    let res = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(html.contains("/api/series"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no external resources");
}

async fn protected_app() -> (Router, tempfile::TempDir) {
    let (store, dir) = sqlite_store().await;
    fold_batch(&store, &sample(50)).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0 + 2 * DAY_MS));
    (router(ApiState { store, clock, token: Some(Arc::from("t0ken-123")) }), dir)
}

async fn get_with(app: &Router, uri: &str, header: Option<(&str, &str)>) -> Response {
    let mut req = Request::get(uri);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
}

#[tokio::test]
async fn the_api_token_guards_reports_dashboard_and_audit() {
    let (app, _dir) = protected_app().await;
    for uri in ["/api/summary", "/api/audit", "/api/top"] {
        assert_eq!(get_with(&app, uri, None).await.status(), StatusCode::UNAUTHORIZED, "{uri}");
        let wrong = Some(("authorization", "Bearer t0ken-124"));
        assert_eq!(get_with(&app, uri, wrong).await.status(), StatusCode::UNAUTHORIZED, "{uri}");
        let right = Some(("authorization", "Bearer t0ken-123"));
        assert_eq!(get_with(&app, uri, right).await.status(), StatusCode::OK, "{uri}");
    }
    // A browser: a login page, then the token once in the URL becomes a cookie.
    let page = get_with(&app, "/", None).await;
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("name=\"token\""), "a form asks for it");
    assert_eq!(get_with(&app, "/?token=nope", None).await.status(), StatusCode::UNAUTHORIZED);
    // The login form submits the token form-encoded, among other fields.
    let encoded = get_with(&app, "/?x=1&token=t0ken%2D123", None).await;
    assert_eq!(encoded.status(), StatusCode::SEE_OTHER);
    let login = get_with(&app, "/?token=t0ken-123", None).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()[header::LOCATION], "/", "the token leaves the address bar");
    let cookie = login.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    for uri in ["/", "/api/summary"] {
        assert_eq!(get_with(&app, uri, Some(("cookie", pair))).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn audits_run_one_at_a_time() {
    let (store, _dir) = sqlite_store().await;
    fold_batch(&store, &sample(2_000)).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let app = router(ApiState { store, clock, token: None });
    // Concurrent on one task: the first audit awaits the store while the others arrive.
    let answers =
        futures::future::join_all((0..6).map(|_| get_with(&app, "/api/audit", None))).await;
    let codes: Vec<StatusCode> = answers.iter().map(Response::status).collect();
    assert_eq!(codes.iter().filter(|c| **c == StatusCode::OK).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == StatusCode::OK || *c == StatusCode::TOO_MANY_REQUESTS));
    let busy = answers.iter().find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).unwrap();
    assert_eq!(busy.headers()[header::RETRY_AFTER], "5");
    // Once it finished, the next one runs.
    assert_eq!(get_with(&app, "/api/audit", None).await.status(), StatusCode::OK);
}
