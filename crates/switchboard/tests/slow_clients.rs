//! Idle, silent and slow-drip clients cannot hold a listener's file descriptors: thousands of
//! them are opened against the real tracker collector, jobproxy and presence status processes
//! (HTTP/1 and gRPC listeners); a real request
//! still succeeds while they hang on, every one of them is closed within the header timeout,
//! and connections beyond the cap are closed at once.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_testkit::free_port;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[path = "support/idle.rs"]
mod idle;
mod support;

use support::{listening, start};

/// `switchboard <args>` in the test's working directory.
fn start_here(args: &[&str]) -> support::Proc {
    start(args, std::path::Path::new("."))
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Silent connections, and connections that drip a request head one byte at a time.
const IDLE: usize = 2_000;
const DRIPPING: usize = 200;

/// One HTTP/1.1 exchange on a fresh connection; the status code.
async fn request(addr: SocketAddr, head: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect for a real request");
    let req = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the real request is answered while the slow clients hang on")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// Opens the idle and dripping clients, checks a real request meanwhile, then that all of
/// them are closed within the header timeout (plus scheduling slack).
async fn hold_and_release(addr: SocketAddr, real: impl AsyncFnOnce() -> u16, want: u16) {
    hold_and_release_dripping(addr, real, want, b"POST /track HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await;
}

async fn hold_and_release_dripping(
    addr: SocketAddr,
    real: impl AsyncFnOnce() -> u16,
    want: u16,
    head: &'static [u8],
) {
    let silent = idle::silent(addr, IDLE).await;
    let started = Instant::now();
    let drips = idle::dripping(addr, DRIPPING, head);
    assert_eq!(real().await, want, "a real request succeeds beside {IDLE} idle clients");
    idle::all_closed(silent, drips, HEADER_TIMEOUT + Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(took >= HEADER_TIMEOUT.mul_f32(0.9), "closed only after the timeout: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_collector_closes_idle_and_slow_clients() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let store = format!("sqlite://{}/t.db", dir.path().display());
    let timeout = format!("{}s", HEADER_TIMEOUT.as_secs());
    let (a, t) = (addr.to_string(), timeout.as_str());
    let _collector = start_here(&[
        "tracker",
        "collector",
        "--listen",
        &a,
        "--store",
        &store,
        "--header-timeout",
        t,
    ]);
    listening(addr).await;
    let event = format!(
        r#"{{"objectId":1,"objectType":"user","action":"view","subjectId":2,"subjectType":"article","datetimeStamp":{}}}"#,
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    );
    hold_and_release(addr, async || request(addr, "POST /track HTTP/1.1", &event).await, 202).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobproxy_closes_idle_and_slow_clients() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let timeout = format!("{}s", HEADER_TIMEOUT.as_secs());
    let a = addr.to_string();
    let _proxy = start_here(&[
        "jobproxy",
        "--listen",
        &a,
        "--upstream",
        "http://127.0.0.1:9",
        "--header-timeout",
        &timeout,
    ]);
    listening(addr).await;
    // A callback for a token nobody holds: answered at once, without the job server.
    let real = async || request(addr, "POST /callback/unknown HTTP/1.1", "{}").await;
    let status = real().await;
    assert!((400..500).contains(&status), "unknown callback refused: {status}");
    hold_and_release(addr, real, status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let store = format!("sqlite://{}/t.db", dir.path().display());
    let a = addr.to_string();
    let _collector = start_here(&[
        "tracker",
        "collector",
        "--listen",
        &a,
        "--store",
        &store,
        "--max-connections",
        "100",
        "--header-timeout",
        "60s",
    ]);
    listening(addr).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The listening() probe's own connection may still count for a moment: allow for it.
    let extra: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..50 {
            v.push(TcpStream::connect(addr).await.unwrap());
        }
        v
    };
    // Every connection past the cap is closed by the server at once, not left to stall.
    let closed = futures::future::join_all(extra.into_iter().map(|s| async move {
        let mut s = s;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    assert!(closed.iter().filter(|c| **c).count() >= 49, "beyond the cap: {closed:?}");
    drop(held);
}

/// The gRPC listeners run the same limits (`core::grpc`): a StatusReader call is answered beside
/// thousands of silent connections and clients dripping the HTTP/2 preface, and all of those are
/// closed once they have held no call for `--idle-timeout`. (Streams that stay open are not
/// closed: tests/presence.rs and tests/control.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_status_closes_idle_and_slow_grpc_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, st) = (free_port(), free_port());
    let status: SocketAddr = format!("127.0.0.1:{st}").parse().unwrap();
    let store = format!("sqlite://{}/p.db", dir.path().display());
    let timeout = format!("{}s", HEADER_TIMEOUT.as_secs());
    let _presence = start_here(&[
        "presence",
        "all",
        "--gateway-listen",
        &format!("127.0.0.1:{gw}"),
        "--status-listen",
        &status.to_string(),
        "--store",
        &store,
        "--idle-timeout",
        &timeout,
    ]);
    listening(status).await;
    let url = format!("http://{status}");
    let real = async || match switchboard_presence::fetch_online(&url).await {
        Ok(_) => 200,
        Err(e) => panic!("StatusReader call failed beside idle clients: {e}"),
    };
    hold_and_release_dripping(status, real, 200, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
}
