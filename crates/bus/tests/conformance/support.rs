//! Helpers shared by the conformance cases: payload text, bounded waits, draining.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use switchboard_bus::{Bus, Bytes, Consumer, Delivery, StreamConfig, Subscription};

/// Upper bound for anything that should happen "promptly"; only reached on failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn body(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

pub fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn recv(sub: &mut Subscription) -> Result<(String, String)> {
    let m = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .context("no message in time")?
        .context("subscription closed")?;
    Ok((m.subject.clone(), text(&m.payload)))
}

/// Fetches until exactly `n` deliveries arrived (or fails after [`PATIENCE`]).
pub async fn fetch_n(c: &mut Consumer, n: usize) -> Result<Vec<Delivery>> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        ensure!(Instant::now() < deadline, "only {} of {n} deliveries arrived", got.len());
        got.extend(c.fetch(n - got.len(), Duration::from_secs(1)).await?);
    }
    Ok(got)
}

/// Asserts nothing (more) is delivered within `wait`.
pub async fn expect_empty(c: &mut Consumer, wait: Duration) -> Result<()> {
    let extra = c.fetch(10, wait).await?;
    let seqs: Vec<u64> = extra.iter().map(|d| d.stream_seq).collect();
    ensure!(seqs.is_empty(), "unexpected deliveries {seqs:?}");
    Ok(())
}

pub async fn ack_all(ds: &[Delivery]) -> Result<()> {
    for d in ds {
        d.ack().await?;
    }
    Ok(())
}

pub fn payloads(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| text(&d.payload)).collect()
}

pub async fn events_stream(bus: &Bus, f: impl FnOnce(&mut StreamConfig)) -> Result<()> {
    let mut cfg = StreamConfig::new("EVENTS", ["ev.>"]);
    f(&mut cfg);
    bus.ensure_stream(&cfg).await?;
    Ok(())
}

pub async fn publish_numbered(bus: &Bus, range: std::ops::Range<u32>) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for i in range {
        seqs.push(bus.publish_durable("ev.n", body(i.to_string()), None).await?);
    }
    Ok(seqs)
}

/// Drains (and acks) a consumer, returning the subjects it held.
pub async fn drain(c: &mut Consumer) -> Result<Vec<String>> {
    let mut subjects = Vec::new();
    loop {
        let got = c.fetch(100, Duration::from_millis(200)).await?;
        if got.is_empty() {
            return Ok(subjects);
        }
        subjects.extend(got.iter().map(|d| d.subject.clone()));
        ack_all(&got).await?;
    }
}
