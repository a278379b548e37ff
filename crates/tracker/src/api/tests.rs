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
    (router(ApiState { store, clock }), events, dir)
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
