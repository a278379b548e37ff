//! Silent and slow-drip clients for the listener-limit tests (slow_clients, presence, control):
//! open them, then wait until the server has closed every one.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// `n` connections to `addr` that never send a byte.
pub async fn silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.expect("connect a silent client"));
    }
    v
}

/// `n` connections that send `head` one byte every 200 ms, cycling, until the server closes
/// them; each task ends when its connection is closed.
pub fn dripping(addr: SocketAddr, n: usize, head: &'static [u8]) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect a dripping client");
                for b in head.iter().cycle() {
                    if s.write_all(&[*b]).await.is_err() {
                        return; // closed by the server
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect()
}

/// Waits until the server closes `s` (EOF or reset); panics after `within`.
pub async fn closed_within(mut s: TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {} // e.g. a 408 answer or a GOAWAY before the close
        }
    }
}

/// Waits until every silent and dripping client has been closed, each within `within`.
pub async fn all_closed(silent: Vec<TcpStream>, drips: Vec<JoinHandle<()>>, within: Duration) {
    futures::future::join_all(silent.into_iter().map(|s| closed_within(s, within))).await;
    for d in drips {
        tokio::time::timeout(within, d).await.expect("dripping clients are cut off").unwrap();
    }
}
