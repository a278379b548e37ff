//! The load of the held-requests phase: N synchronous jobs, each on its own client
//! connection (a held HTTP/1.1 request occupies its connection), all open at once.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::job::ReportHead;

/// What the load saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Request-to-answer time of every successful job.
    pub latencies: Vec<Duration>,
    /// Jobs that did not come back completed.
    pub failures: usize,
    /// Why the first failure failed.
    pub first_failure: Option<String>,
}

/// Sends `n` held jobs to `path` spread over `accounts` accounts, at most `connecting`
/// connections being set up at a time, and waits for all of them.
pub(crate) async fn hold(
    addr: SocketAddr,
    path: &'static str,
    n: usize,
    accounts: usize,
    connecting: usize,
) -> Outcome {
    let gate = Arc::new(Semaphore::new(connecting.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let account = format!("bench-{}", i % accounts.max(1));
        set.spawn(one(addr, path, account, Arc::clone(&gate)));
    }
    let mut out = Outcome::default();
    while let Some(joined) = set.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(latency) => out.latencies.push(latency),
            Err(why) => {
                out.failures += 1;
                out.first_failure.get_or_insert(why);
            }
        }
    }
    out
}

async fn one(
    addr: SocketAddr,
    path: &'static str,
    account: String,
    gate: Arc<Semaphore>,
) -> Result<Duration, String> {
    let permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Ends when `sender` is dropped at the end of this request.
    tokio::spawn(connection);
    drop(permit);
    let body = serde_json::json!({ "account": account, "wait": true }).to_string();
    let request = Request::post(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let began = Instant::now();
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
    let latency = began.elapsed();
    let body = body.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    match ReportHead::parse(&body) {
        Ok(r) if r.is_completed() => Ok(latency),
        Ok(r) => Err(format!("job {} ended {:?}", r.id, r.state)),
        Err(e) => Err(e),
    }
}
