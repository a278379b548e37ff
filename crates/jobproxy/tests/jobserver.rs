//! The job-server simulator over real loopback sockets: the per-account connection rule,
//! both modes, callback retries and the injected faults.

#[path = "support/harness.rs"]
mod harness;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use harness::sim;
use serde_json::{Value, json};
use switchboard_core::Ctx;
use switchboard_jobproxy::JobServer;
use tokio::sync::mpsc;

/// A sync job on its own connection, closed after the answer (so it frees the account).
async fn sync_job(server: &JobServer, account: &str) -> Value {
    let res = reqwest::Client::new()
        .post(format!("http://{}/start", server.addr()))
        .header("connection", "close")
        .json(&json!({"account": account, "wait": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A callback receiver answering `statuses` in turn (then 200), forwarding each body.
async fn receiver(ctx: &Ctx, statuses: Vec<u16>) -> (String, mpsc::Receiver<(Instant, String)>) {
    let (tx, rx) = mpsc::channel(16);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/cb",
        post(move |body: String| {
            let (tx, calls, statuses) = (tx.clone(), Arc::clone(&calls), statuses.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                tx.send((Instant::now(), body)).await.unwrap();
                StatusCode::from_u16(statuses.get(n).copied().unwrap_or(200)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let token = ctx.shutdown.clone();
    ctx.spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await.unwrap();
    });
    (url, rx)
}

async fn start_async(server: &JobServer, callback: &str) -> (Instant, Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{}/start", server.addr()))
        .json(&json!({"account": "a", "wait": false, "callback": callback}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let at = Instant::now();
    (at, res.json().await.unwrap())
}

#[tokio::test]
async fn one_connection_at_a_time_per_account() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "300ms"]).await;
    let began = Instant::now();
    let (a, b) = tokio::join!(sync_job(&server, "same"), sync_job(&server, "same"));
    assert!(began.elapsed() >= Duration::from_millis(600), "same account must serialise");
    assert_eq!((a["state"].as_str(), b["state"].as_str()), (Some("completed"), Some("completed")));
    assert_ne!(a["id"], b["id"]);
    let proof = a["proof"].as_str().unwrap();
    assert!(
        proof.len() == 40 && proof.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );

    let began = Instant::now();
    tokio::join!(sync_job(&server, "x"), sync_job(&server, "y"));
    assert!(began.elapsed() < Duration::from_millis(600), "different accounts run in parallel");
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn async_jobs_call_back_and_retry_after_server_errors() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "50ms", "--callback-backoff", "10ms"]).await;
    let (url, mut calls) = receiver(&ctx, vec![500, 503]).await;
    let (_, started) = start_async(&server, &url).await;
    assert_eq!(started["state"], "running");
    for _ in 0..3 {
        let (_, body) = calls.recv().await.unwrap();
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["id"], started["id"]);
        assert_eq!(report["state"], "completed");
    }
    ctx.drain(Duration::from_secs(5)).await;
    assert!(calls.try_recv().is_err(), "delivered on the third attempt, then no more");
}

#[tokio::test]
async fn injected_faults_do_what_they_say() {
    let ctx = Ctx::new();
    let dup = sim(&ctx, &["--job-time", "10ms", "--duplicate-callback-rate", "1"]).await;
    let (url, mut calls) = receiver(&ctx, vec![]).await;
    start_async(&dup, &url).await;
    let first = calls.recv().await.unwrap().1;
    assert_eq!(calls.recv().await.unwrap().1, first, "the same report twice");

    let early = sim(&ctx, &["--job-time", "10ms", "--early-callback-rate", "1"]).await;
    let (url, mut calls) = receiver(&ctx, vec![]).await;
    let (answered, _) = start_async(&early, &url).await;
    assert!(calls.recv().await.unwrap().0 < answered, "callback before start response");

    let failed = sim(&ctx, &["--job-time", "10ms", "--failed-job-rate", "1"]).await;
    let (url, mut calls) = receiver(&ctx, vec![]).await;
    start_async(&failed, &url).await;
    let report: Value = serde_json::from_str(&calls.recv().await.unwrap().1).unwrap();
    assert_eq!(report["state"], "failed");
    assert!(report.get("proof").is_none());

    let res = reqwest::Client::new()
        .post(format!("http://{}/start", failed.addr()))
        .json(&json!({"account": "a", "wait": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "wait:false without a callback");
    ctx.drain(Duration::from_secs(5)).await;
}
