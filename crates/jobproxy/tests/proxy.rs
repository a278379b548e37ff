//! The proxy in process against the real simulator (or a scripted upstream where a test needs
//! exact control), over real loopback sockets.

#[path = "support/harness.rs"]
mod harness;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONNECTION;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use harness::sim;
use serde_json::{Value, json};
use switchboard_core::Ctx;
use switchboard_jobproxy::{Args, ProxyHandle, start_proxy};
use tokio::sync::mpsc;

#[derive(Parser)]
struct ProxyCli {
    #[command(flatten)]
    args: Args,
}

async fn proxy(ctx: &Ctx, upstream: SocketAddr, flags: &[&str]) -> ProxyHandle {
    let upstream = format!("http://{upstream}");
    let argv = ["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream];
    let args = ProxyCli::parse_from(argv.iter().chain(flags)).args;
    start_proxy(args, switchboard_bus::Bus::memory(), ctx).await.unwrap()
}

async fn call(url: &str, body: Value) -> (u16, Vec<u8>) {
    let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
}

/// One held job for account `a` on the proxy's root path.
async fn job(p: &ProxyHandle) -> (u16, Vec<u8>) {
    call(&format!("http://{}/", p.addr), json!({"account": "a", "wait": true})).await
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

/// Polls `f` until it holds or `limit` passes (for effects no event announces).
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn fifty_jobs_finish_in_about_one_job_time_over_one_upstream_connection() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &[]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    let url = format!("http://{}/start", p.addr);
    let began = Instant::now();
    let jobs = (0..50).map(|_| call(&url, json!({"account": "a", "wait": true})));
    let answers = futures::future::join_all(jobs).await;
    let total = began.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{}", String::from_utf8_lossy(body));
        let report = json_of(body);
        assert_eq!(report["state"], "completed");
        let proof = report["proof"].as_str().unwrap();
        assert!(proof.len() == 40 && proof.bytes().all(|b| b.is_ascii_hexdigit()), "{proof}");
    }
    assert!(total < Duration::from_secs(5), "50 jobs took {total:?}");
    assert_eq!(server.connections(), 1, "one account needs exactly one upstream connection");
    assert!(eventually(Duration::from_secs(1), || p.held() == 0).await);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn root_path_works_and_accounts_get_their_own_connections() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "100ms"]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    let url = format!("http://{}/", p.addr);
    let jobs = ["a", "b", "c"].map(|a| call(&url, json!({"account": a, "wait": true})));
    for (status, _) in futures::future::join_all(jobs).await {
        assert_eq!(status, 200);
    }
    assert_eq!(server.connections(), 3);
    ctx.drain(Duration::from_secs(5)).await;
}

/// A scripted job server: reports every start's callback URL on `tx`, answers
/// `{"state":"running","id":"abc"}` and, when `early` is set, first POSTs `early` to the
/// callback and reports that POST's status. With `close`, it closes every connection after
/// answering (as a job server with keep-alive disabled would).
#[derive(Clone)]
struct Scripted {
    tx: mpsc::Sender<(String, Option<u16>)>,
    early: Option<&'static str>,
    close: bool,
}

async fn scripted_start(State(s): State<Scripted>, body: String) -> Response {
    let start: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(start["wait"], false, "the proxy must start jobs asynchronously");
    let callback = start["callback"].as_str().unwrap().to_owned();
    let mut status = None;
    if let Some(report) = s.early {
        let res = reqwest::Client::new().post(&callback).body(report).send().await.unwrap();
        status = Some(res.status().as_u16());
    }
    s.tx.send((callback, status)).await.unwrap();
    let running = r#"{"state":"running","id":"abc"}"#;
    if s.close {
        ([(CONNECTION, "close")], running).into_response()
    } else {
        running.into_response()
    }
}

async fn scripted(
    ctx: &Ctx,
    early: Option<&'static str>,
    close: bool,
) -> (SocketAddr, mpsc::Receiver<(String, Option<u16>)>) {
    let (tx, rx) = mpsc::channel(16);
    let state = Scripted { tx, early, close };
    let app = Router::new().route("/start", post(scripted_start)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = ctx.shutdown.clone();
    ctx.spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await.unwrap();
    });
    (addr, rx)
}

#[tokio::test]
async fn a_callback_that_beats_the_start_response_is_delivered_byte_for_byte() {
    let ctx = Ctx::new();
    // Odd spacing, key order and an extra field: the client must get exactly these bytes.
    let report = "{ \"proof\":\"E850A3B7C2D1E0F9A8B7C6D5E4F3A2B1C0D9E8DC\",\n\t\"id\":\"abc\", \"state\":\"completed\", \"x\":1 }";
    let (upstream, mut starts) = scripted(&ctx, Some(report), false).await;
    let p = proxy(&ctx, upstream, &[]).await;
    let url = format!("http://{}/start", p.addr);
    let client = call(&url, json!({"account": "a", "wait": true}));
    let (answer, start) = tokio::join!(client, starts.recv());
    let (_, early_status) = start.unwrap();
    assert_eq!(early_status, Some(202), "the early callback is parked, not refused");
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1, report.as_bytes());
    assert_eq!(p.held(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn forged_mismatched_duplicate_and_invalid_callbacks_are_refused() {
    let ctx = Ctx::new();
    let (upstream, mut starts) = scripted(&ctx, None, false).await;
    let p = proxy(&ctx, upstream, &[]).await;
    let url = format!("http://{}/start", p.addr);
    let client =
        tokio::spawn(async move { call(&url, json!({"account": "a", "wait": true})).await });
    let (callback, _) = starts.recv().await.unwrap();
    assert!(eventually(Duration::from_secs(2), || p.held() == 1).await);
    let send = |url: String, body: &'static str| async move {
        reqwest::Client::new().post(url).body(body).send().await.unwrap().status().as_u16()
    };
    let report = r#"{"id":"abc","state":"completed","proof":"00"}"#;
    let forged = format!("http://{}/callback/{:032x}", p.addr, 7);
    assert_eq!(send(forged, report).await, 404, "unknown token");
    assert_eq!(send(format!("http://{}/callback/xyz", p.addr), report).await, 404);
    assert_eq!(send(callback.clone(), "not json").await, 400);
    assert_eq!(send(callback.clone(), r#"{"id":"other","state":"completed"}"#).await, 409);
    assert_eq!(p.held(), 1, "refused callbacks leave the request held");
    assert_eq!(send(callback.clone(), report).await, 200);
    let (status, body) = client.await.unwrap();
    assert_eq!((status, body.as_slice()), (200, report.as_bytes()));
    assert_eq!(send(callback, report).await, 409, "duplicate");
    assert_eq!(p.held(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn upstream_failures_are_502_with_a_json_reason() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--fail-start-rate", "1"]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    let (status, body) = job(&p).await;
    assert_eq!(status, 502);
    let v = json_of(&body);
    assert_eq!(v["error"], "upstream_error");
    assert!(v["reason"].as_str().unwrap().contains("500"), "{v}");

    // Nothing listens on the upstream port any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = proxy(&ctx, gone, &[]).await;
    let (status, body) = job(&p).await;
    assert_eq!(status, 502);
    assert!(json_of(&body)["reason"].as_str().unwrap().contains("connecting"));
    assert_eq!(p.held(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_missing_callback_is_a_504_after_the_deadline_and_nothing_leaks() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--missing-callback-rate", "1", "--job-time", "10ms"]).await;
    let p = proxy(&ctx, server.addr(), &["--deadline", "300ms"]).await;
    let began = Instant::now();
    let (status, body) = job(&p).await;
    assert_eq!(status, 504);
    assert_eq!(json_of(&body)["error"], "callback_timeout");
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(p.held(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_requests_are_400_and_never_reach_upstream() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &[]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    for body in [json!({"wait": true}), json!([1]), json!({"account": 5, "wait": true})] {
        let (status, answer) = call(&format!("http://{}/", p.addr), body).await;
        assert_eq!(status, 400);
        assert_eq!(json_of(&answer)["error"], "bad_request");
    }
    assert_eq!(server.connections(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_that_leaves_drops_its_held_request() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "10s"]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let url = format!("http://{}/", p.addr);
    let request = client.post(&url).json(&json!({"account": "a", "wait": true})).send();
    let watcher = async {
        assert!(eventually(Duration::from_secs(2), || p.held() == 1).await);
    };
    let (res, ()) = tokio::join!(request, watcher);
    assert!(res.unwrap_err().is_timeout());
    assert!(eventually(Duration::from_secs(2), || p.held() == 0).await, "held: {}", p.held());
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn wait_false_passes_straight_through() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "10ms"]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    // The client's own callback receiver: the report must go there, not to the proxy.
    let (tx, mut rx) = mpsc::channel::<String>(1);
    let app = Router::new().route(
        "/mine",
        post(move |body: String| {
            let tx = tx.clone();
            async move { tx.send(body).await.unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mine = format!("http://{}/mine", listener.local_addr().unwrap());
    ctx.spawn(axum::serve(listener, app).into_future());
    let (status, body) = call(
        &format!("http://{}/", p.addr),
        json!({"account": "a", "wait": false, "callback": mine}),
    )
    .await;
    assert_eq!(status, 200);
    let started = json_of(&body);
    assert_eq!(started["state"], "running");
    let report = json_of(rx.recv().await.unwrap().as_bytes());
    assert_eq!(report["id"], started["id"]);
    assert_eq!(p.held(), 0);
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_refuses_new_jobs_but_lets_held_ones_finish() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "500ms"]).await;
    let proxy_ctx = ctx.child();
    let p = proxy(&proxy_ctx, server.addr(), &[]).await;
    let url = format!("http://{}/", p.addr);
    let held = tokio::spawn({
        let url = url.clone();
        async move { call(&url, json!({"account": "a", "wait": true})).await }
    });
    assert!(eventually(Duration::from_secs(2), || p.held() == 1).await);
    proxy_ctx.shutdown.cancel();
    let (status, body) = call(&url, json!({"account": "a", "wait": true})).await;
    assert_eq!(status, 503);
    assert_eq!(json_of(&body)["error"], "draining");
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(p.addr).is_err()).await
    );
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn requests_beyond_the_bounds_are_shed_with_503() {
    let ctx = Ctx::new();
    let slow = sim(&ctx, &["--latency", "1s", "--job-time", "10ms"]).await;
    let p = proxy(&ctx, slow.addr(), &["--account-queue", "1"]).await;
    let first = tokio::spawn({
        let p = p.clone();
        async move { job(&p).await }
    });
    // The link has taken the first start off its queue once it has connected upstream.
    assert!(eventually(Duration::from_secs(2), || slow.connections() == 1).await);
    let (a, b) = tokio::join!(job(&p), job(&p));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503], "one queued behind the first, one shed");
    let shed = if a.0 == 503 { a.1 } else { b.1 };
    assert!(json_of(&shed)["reason"].as_str().unwrap().contains("account_queue"));
    assert_eq!(first.await.unwrap().0, 200);

    let busy = sim(&ctx, &["--job-time", "10s"]).await;
    let p = proxy(&ctx, busy.addr(), &["--max-held", "2"]).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { job(&p).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || p.held() == 2).await);
    let (status, body) = job(&p).await;
    assert_eq!(status, 503);
    assert!(json_of(&body)["reason"].as_str().unwrap().contains("max_held"));
    held.iter().for_each(tokio::task::JoinHandle::abort);
    assert!(eventually(Duration::from_secs(2), || p.held() == 0).await);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_link_reconnects_when_the_job_server_closes_its_connection() {
    let ctx = Ctx::new();
    let report = r#"{"id":"abc","state":"completed"}"#;
    let (upstream, mut starts) = scripted(&ctx, Some(report), true).await;
    let p = proxy(&ctx, upstream, &[]).await;
    for _ in 0..3 {
        let (answer, start) = tokio::join!(job(&p), starts.recv());
        assert_eq!(start.unwrap().1, Some(202));
        assert_eq!((answer.0, answer.1.as_slice()), (200, report.as_bytes()));
    }
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn new_accounts_beyond_max_links_are_shed_until_a_link_closes() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "10ms"]).await;
    let flags = ["--max-links", "1", "--upstream-idle", "1s"];
    let p = proxy(&ctx, server.addr(), &flags).await;
    let url = format!("http://{}/", p.addr);
    let (status, _) = call(&url, json!({"account": "a", "wait": true})).await;
    assert_eq!(status, 200);
    // Account a's link is idle but still open: account b finds no free link.
    let (status, body) = call(&url, json!({"account": "b", "wait": true})).await;
    assert_eq!(status, 503);
    assert!(json_of(&body)["reason"].as_str().unwrap().contains("links"));
    assert_eq!(server.connections(), 1, "the shed start never reached the job server");
    // Once a's link retires, its slot is free again.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = call(&url, json!({"account": "b", "wait": true})).await;
        if status == 200 {
            break;
        }
        assert!(status == 503 && Instant::now() < end, "b never got a link: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.connections(), 2);
    assert_eq!(p.held(), 0);
    ctx.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn held_requests_get_503_draining_once_the_drain_timeout_passes() {
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "30s"]).await;
    let proxy_ctx = ctx.child();
    let p = proxy(&proxy_ctx, server.addr(), &["--drain-timeout", "300ms"]).await;
    let held = tokio::spawn({
        let p = p.clone();
        async move { job(&p).await }
    });
    assert!(eventually(Duration::from_secs(2), || p.held() == 1).await);
    let began = Instant::now();
    proxy_ctx.shutdown.cancel();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["error"], "draining");
    assert!(began.elapsed() >= Duration::from_millis(300), "answered before the drain timeout");
    tokio::time::timeout(Duration::from_secs(5), p.stopped()).await.expect("the proxy stops");
    assert_eq!(p.held(), 0);
    assert!(std::net::TcpStream::connect(p.addr).is_err(), "the listener is closed");
    ctx.drain(Duration::from_secs(5)).await;
}

/// Reads `n` HTTP/1.1 responses (each with a `content-length`) from `conn`.
async fn responses(conn: &mut tokio::net::TcpStream, n: usize) -> Vec<(u16, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    while out.len() < n {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = res.parse(&buf) {
            let length = res.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
            let length: usize =
                std::str::from_utf8(length.unwrap().value).unwrap().parse().unwrap();
            if buf.len() >= len + length {
                out.push((res.code.unwrap(), buf[len..len + length].to_vec()));
                buf.drain(..len + length);
                continue;
            }
        }
        assert!(conn.read_buf(&mut buf).await.unwrap() > 0, "closed after {} answers", out.len());
    }
    out
}

/// Held requests pipelined on one connection are answered in order, and the first request
/// the lean front end leaves to the router (here a 400) is still answered on that connection.
#[tokio::test]
async fn pipelined_held_requests_and_a_router_request_share_one_connection() {
    use tokio::io::AsyncWriteExt as _;
    let ctx = Ctx::new();
    let server = sim(&ctx, &["--job-time", "50ms"]).await;
    let p = proxy(&ctx, server.addr(), &[]).await;
    let request = |body: &str| {
        format!("POST /start HTTP/1.1\r\nhost: p\r\ncontent-length: {}\r\n\r\n{body}", body.len())
    };
    let pipelined = [
        request(r#"{"account":"a","wait":true}"#),
        request(r#"{"account":"b","wait":true,"extra":[1,2]}"#),
        request(r#"{"wait":true}"#),
    ]
    .concat();
    let mut conn = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(pipelined.as_bytes()).await.unwrap();
    let answers = responses(&mut conn, 3).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 400], "{answers:?}");
    let (first, second) = (json_of(&answers[0].1), json_of(&answers[1].1));
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("completed"), Some("completed"))
    );
    assert_ne!(first["id"], second["id"]);
    assert_eq!(json_of(&answers[2].1)["error"], "bad_request");
    // The connection stays open for more, now served by the router.
    conn.write_all(request(r#"{"account":"c","wait":true}"#).as_bytes()).await.unwrap();
    assert_eq!(responses(&mut conn, 1).await[0].0, 200);
    assert_eq!(p.held(), 0);
    ctx.shutdown.cancel();
}
