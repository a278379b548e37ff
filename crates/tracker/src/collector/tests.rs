//! Collector handler tests: `oneshot` requests against a real SQLite outbox.
use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::{Ctx, ManualClock};
use tower::ServiceExt;

use super::*;
use crate::journal::Sink;
use crate::outbox;

const NOW_MS: i64 = 1_700_000_000_000;

struct Fixture {
    app: Router,
    store: switchboard_store::Store,
    _dir: tempfile::TempDir,
}

fn validator() -> Validator {
    Validator::new(Arc::new(ManualClock::new(NOW_MS)), Some(86_400_000), 300_000)
}

fn limits() -> Limits {
    Limits { max_body_bytes: 4096, max_events: 5 }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = crate::open_store(&url).await.unwrap();
    let journal = Journal::start(Sink::Outbox(store.clone()), 16, &Ctx::new());
    let app = router(CollectorState { validator: validator(), limits: limits(), journal });
    Fixture { app, store, _dir: dir }
}

fn event(object_id: i64) -> Value {
    json!({"objectId":object_id,"objectType":"user","action":"view","subjectId":2,
        "subjectType":"article","datetimeStamp":NOW_MS / 1000})
}

async fn post(
    app: &Router,
    path: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if gzip {
        req = req.header(header::CONTENT_ENCODING, "gzip");
    }
    let res = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!("body is not JSON: {}", String::from_utf8_lossy(&bytes));
    });
    (status, headers, json)
}

async fn journaled(store: &switchboard_store::Store) -> i64 {
    outbox::pending_events(store).await.unwrap()
}

#[tokio::test]
async fn single_event_is_journaled_before_202() {
    let f = fixture().await;
    let (status, _, body) = post(&f.app, "/track", event(1).to_string().into_bytes(), false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert_eq!(journaled(&f.store).await, 1);
}

#[tokio::test]
async fn batches_as_array_ndjson_and_gzip() {
    let f = fixture().await;
    let array = serde_json::to_vec(&json!([event(1), event(2), event(3)])).unwrap();
    let (status, _, body) = post(&f.app, "/track/batch", array, false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["ids"].as_array().unwrap().len(), 3);

    let ndjson = format!("{}\n{}\n", event(4), event(5)).into_bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&ndjson).unwrap();
    let (status, _, body) = post(&f.app, "/track/batch", gz.finish().unwrap(), true).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(journaled(&f.store).await, 5);
}

#[tokio::test]
async fn one_bad_event_rejects_the_whole_batch_with_every_problem() {
    let f = fixture().await;
    let mut bad = event(2);
    bad["objectId"] = json!("two");
    bad.as_object_mut().unwrap().remove("action");
    let body = serde_json::to_vec(&json!([event(1), bad])).unwrap();
    let (status, _, answer) = post(&f.app, "/track/batch", body, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["problemCount"], 2);
    let problems = answer["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["index"] == 1), "{answer}");
    let fields: Vec<&str> = problems.iter().map(|p| p["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["objectId", "action"]);
    assert_eq!(journaled(&f.store).await, 0);
}

#[tokio::test]
async fn every_other_rejection_path_answers_json() {
    let f = fixture().await;
    let cases: Vec<(&str, Vec<u8>, bool, StatusCode)> = vec![
        ("/track", b"{not json".to_vec(), false, StatusCode::BAD_REQUEST),
        ("/track", b"[1]".to_vec(), false, StatusCode::BAD_REQUEST),
        ("/track/batch", b"".to_vec(), false, StatusCode::BAD_REQUEST),
        ("/track/batch", vec![b' '; 5000], false, StatusCode::PAYLOAD_TOO_LARGE),
        (
            "/track/batch",
            serde_json::to_vec(&(0..6).map(event).collect::<Vec<_>>()).unwrap(),
            false,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("/track/batch", b"\x1f\x8b garbage".to_vec(), true, StatusCode::BAD_REQUEST),
    ];
    for (path, body, gzip, want) in cases {
        let (status, _, answer) = post(&f.app, path, body, gzip).await;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let req = Request::post("/track")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(event(1).to_string()))
        .unwrap();
    let res = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(journaled(&f.store).await, 0);
}

#[tokio::test]
async fn a_full_queue_sheds_with_503_and_retry_after() {
    let (journal, queue) = Journal::stalled(1);
    let app = router(CollectorState { validator: validator(), limits: limits(), journal });
    let first = tokio::spawn(post_owned(app.clone(), event(1).to_string().into_bytes()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "first request never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, headers, body) =
        post(&app, "/track", event(2).to_string().into_bytes(), false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    // Dropping the queue fails the waiting request instead of acknowledging it.
    drop(queue);
    assert_eq!(first.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn post_owned(app: Router, body: Vec<u8>) -> StatusCode {
    post(&app, "/track", body, false).await.0
}

#[tokio::test]
async fn a_failing_store_answers_503_not_202() {
    let f = fixture().await;
    f.store.close().await;
    let (status, headers, _) =
        post(&f.app, "/track", event(1).to_string().into_bytes(), false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
}
