//! Conformance cases for durable streams and consumers: storage, acks and redelivery,
//! sharing a durable name, backpressure, dedup, start positions, limits.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchboard_bus::{Bus, Bytes, ConsumerConfig, DeliverFrom, Error};

use crate::support::*;

pub async fn durable_publish_then_consume(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    let seqs = publish_numbered(&bus, 0..10).await?;
    ensure!(seqs == (1..=10).collect::<Vec<_>>(), "sequences {seqs:?}");
    let batch = (10..20).map(|i| (format!("ev.b.{i}"), body(i.to_string()), None)).collect();
    bus.publish_durable_batch(batch).await?;
    match bus.publish_durable("nowhere.x", body("x"), None).await {
        Err(Error::NotFound(_)) => {}
        other => bail!("publish outside any stream: {other:?}"),
    }

    let mut c = bus.consumer("EVENTS", &ConsumerConfig::new("worker")).await?;
    // Fewer messages than asked for: returned at once, not after the wait.
    let started = Instant::now();
    let mut got = c.fetch(100, Duration::from_secs(5)).await?;
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "a partial batch took {:?}",
        started.elapsed()
    );
    got.extend(fetch_n(&mut c, 20 - got.len()).await?);
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    ensure!(payloads(&got) == want, "payloads {:?}", payloads(&got));
    ensure!(got.iter().map(|d| d.stream_seq).eq(1..=20), "stream sequences out of order");
    ensure!(got.iter().all(|d| d.delivered == 1), "first delivery must count 1");
    ensure!(got[12].subject == "ev.b.12", "subject {}", got[12].subject);
    let now_ms = i64::try_from(std::time::UNIX_EPOCH.elapsed()?.as_millis())?;
    ensure!(got.iter().all(|d| (now_ms - d.published_ms).abs() < 60_000), "published_ms");
    ack_all(&got).await?;
    got[0].ack().await.context("acking twice is harmless")?;
    expect_empty(&mut c, Duration::from_millis(200)).await?;

    // The same durable name, bound again, resumes after the acked messages.
    drop(c);
    publish_numbered(&bus, 20..21).await?;
    let mut again = bus.consumer("EVENTS", &ConsumerConfig::new("worker")).await?;
    let got = fetch_n(&mut again, 1).await?;
    ensure!(payloads(&got) == ["20"], "resumed at {:?}", payloads(&got));
    Ok(())
}

pub async fn unacked_is_redelivered_after_ack_wait(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..3).await?;
    let cfg = ConsumerConfig { ack_wait: Duration::from_millis(500), ..ConsumerConfig::new("w") };
    let mut crashed = bus.consumer("EVENTS", &cfg).await?;
    let first = fetch_n(&mut crashed, 3).await?;
    first[0].ack().await?;
    // Simulated crash: the worker vanishes holding two unacked deliveries.
    drop(first);
    drop(crashed);

    let mut survivor = bus.consumer("EVENTS", &cfg).await?;
    let started = Instant::now();
    let again = fetch_n(&mut survivor, 2).await?;
    ensure!(payloads(&again) == ["1", "2"], "redelivered {:?}", payloads(&again));
    ensure!(again.iter().all(|d| d.delivered == 2), "delivery count must be 2");
    ensure!(started.elapsed() >= Duration::from_millis(300), "redelivered before ack_wait");
    ack_all(&again).await?;
    expect_empty(&mut survivor, Duration::from_millis(800)).await?;
    Ok(())
}

pub async fn nak_redelivers_after_delay(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..1).await?;
    let mut c = bus.consumer("EVENTS", &ConsumerConfig::new("w")).await?;
    let d = fetch_n(&mut c, 1).await?.remove(0);
    let started = Instant::now();
    d.nak(Duration::from_millis(300)).await?;
    let again = fetch_n(&mut c, 1).await?;
    ensure!(started.elapsed() >= Duration::from_millis(250), "nak delay ignored");
    ensure!(again[0].stream_seq == d.stream_seq && again[0].delivered == 2, "not a redelivery");
    again[0].nak(Duration::ZERO).await?;
    let third = fetch_n(&mut c, 1).await?;
    ensure!(third[0].delivered == 3, "delivered {}", third[0].delivered);
    ack_all(&third).await?;
    expect_empty(&mut c, Duration::from_millis(200)).await
}

pub async fn shared_durable_splits_without_duplicates(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..100).await?;
    let cfg = ConsumerConfig::new("shared");
    let mut handles = [bus.consumer("EVENTS", &cfg).await?, bus.consumer("EVENTS", &cfg).await?];
    let mut seen = BTreeSet::new();
    let mut per_handle = [0; 2];
    // Alternate: each handle fetches while the other's batch is still unacked, so a handle
    // that received in-flight messages would show up as a duplicate.
    while seen.len() < 100 {
        let mut batches = Vec::new();
        for (i, c) in handles.iter_mut().enumerate() {
            let got = c.fetch(10, Duration::from_secs(1)).await?;
            per_handle[i] += got.len();
            for d in &got {
                ensure!(seen.insert(d.stream_seq), "seq {} delivered twice", d.stream_seq);
            }
            batches.push(got);
        }
        ensure!(batches.iter().any(|b| !b.is_empty()), "stalled at {}", seen.len());
        for b in &batches {
            ack_all(b).await?;
        }
    }
    ensure!(seen.iter().copied().eq(1..=100), "missing messages");
    ensure!(per_handle.iter().all(|&n| n > 0), "split {per_handle:?}");
    for c in &mut handles {
        expect_empty(c, Duration::from_millis(100)).await?;
    }
    Ok(())
}

pub async fn max_ack_pending_applies_backpressure(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..5).await?;
    let cfg = ConsumerConfig { max_ack_pending: 2, ..ConsumerConfig::new("w") };
    let mut c = bus.consumer("EVENTS", &cfg).await?;
    let started = Instant::now();
    let first = c.fetch(10, Duration::from_secs(5)).await?;
    ensure!(payloads(&first) == ["0", "1"], "got {:?}", payloads(&first));
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "a partial batch took {:?}",
        started.elapsed()
    );
    // Blocked fetches wait out their time instead of returning at once (no hot loops).
    let started = Instant::now();
    expect_empty(&mut c, Duration::from_millis(300)).await?;
    ensure!(started.elapsed() >= Duration::from_millis(250), "returned in {:?}", started.elapsed());
    first[0].ack().await?;
    let next = fetch_n(&mut c, 1).await?;
    ensure!(payloads(&next) == ["2"], "after one ack got {:?}", payloads(&next));
    Ok(())
}

pub async fn dedup_by_msg_id(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    let a = bus.publish_durable("ev.x", body("first"), Some("id-a")).await?;
    let again = bus.publish_durable("ev.x", body("second"), Some("id-a")).await?;
    ensure!(a == again, "duplicate stored as a new sequence ({a} vs {again})");
    let batch = vec![
        ("ev.x".to_owned(), body("b"), Some("id-b".to_owned())),
        ("ev.x".to_owned(), body("a-retry"), Some("id-a".to_owned())),
        ("ev.x".to_owned(), body("b-retry"), Some("id-b".to_owned())),
        ("ev.x".to_owned(), body("plain"), None),
    ];
    bus.publish_durable_batch(batch).await?;
    let mut c = bus.consumer("EVENTS", &ConsumerConfig::new("w")).await?;
    let got = fetch_n(&mut c, 3).await?;
    ensure!(payloads(&got) == ["first", "b", "plain"], "stored {:?}", payloads(&got));
    ack_all(&got).await?;
    expect_empty(&mut c, Duration::from_millis(200)).await
}

pub async fn deliver_from_new_and_time(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..1).await?;
    let mut all = bus.consumer("EVENTS", &ConsumerConfig::new("all")).await?;
    let t0 = fetch_n(&mut all, 1).await?[0].published_ms;
    // Let the wall clock move past the first message's millisecond.
    while i64::try_from(std::time::UNIX_EPOCH.elapsed()?.as_millis())? <= t0 + 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    publish_numbered(&bus, 1..3).await?;
    let new_cfg = ConsumerConfig { deliver_from: DeliverFrom::New, ..ConsumerConfig::new("new") };
    let mut new = bus.consumer("EVENTS", &new_cfg).await?;
    let from = DeliverFrom::Time(t0 + 1);
    let mut timed = bus
        .consumer("EVENTS", &ConsumerConfig { deliver_from: from, ..ConsumerConfig::new("t") })
        .await?;
    let got = fetch_n(&mut timed, 2).await?;
    ensure!(payloads(&got) == ["1", "2"], "from time got {:?}", payloads(&got));
    expect_empty(&mut timed, Duration::from_millis(100)).await?;
    expect_empty(&mut new, Duration::from_millis(100)).await?;
    publish_numbered(&bus, 3..4).await?;
    let got = fetch_n(&mut new, 1).await?;
    ensure!(payloads(&got) == ["3"], "new got {:?}", payloads(&got));
    Ok(())
}

pub async fn bounded_stream_discards_oldest(bus: Bus) -> Result<()> {
    events_stream(&bus, |c| c.max_messages = Some(5)).await?;
    events_stream(&bus, |c| c.max_messages = Some(5)).await?; // idempotent
    publish_numbered(&bus, 0..8).await?;
    let mut c = bus.consumer("EVENTS", &ConsumerConfig::new("a")).await?;
    let got = fetch_n(&mut c, 5).await?;
    ensure!(got.iter().map(|d| d.stream_seq).eq(4..=8), "kept {:?}", payloads(&got));
    expect_empty(&mut c, Duration::from_millis(100)).await?;

    // Tightening the limit discards at once.
    events_stream(&bus, |c| c.max_messages = Some(2)).await?;
    let mut late = bus.consumer("EVENTS", &ConsumerConfig::new("b")).await?;
    let got = fetch_n(&mut late, 2).await?;
    ensure!(payloads(&got) == ["6", "7"], "after update kept {:?}", payloads(&got));

    events_stream(&bus, |c| c.max_bytes = Some(4_000)).await?;
    for _ in 0..10 {
        bus.publish_durable("ev.big", Bytes::from(vec![b'x'; 1_000]), None).await?;
    }
    let mut sized = bus.consumer("EVENTS", &ConsumerConfig::new("c")).await?;
    let big = drain(&mut sized).await?.iter().filter(|s| *s == "ev.big").count();
    ensure!((1..=3).contains(&big), "max_bytes kept {big} messages of 1 kB under 4 kB");
    Ok(())
}

pub async fn fetch_wakes_on_publish(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    let mut c = bus.consumer("EVENTS", &ConsumerConfig::new("w")).await?;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let got = c.fetch(10, PATIENCE).await;
        (got, started.elapsed())
    });
    // Give the fetch a head start so it is really waiting when the message lands.
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_numbered(&bus, 0..1).await?;
    let (got, waited) = waiting.await?;
    ensure!(payloads(&got?) == ["0"], "fetch returned without the message");
    ensure!(waited < PATIENCE / 2, "fetch slept {waited:?} instead of waking");
    Ok(())
}

pub async fn rebinding_keeps_position_and_start(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..3).await?;
    let mut first = bus.consumer("EVENTS", &ConsumerConfig::new("w")).await?;
    ack_all(&fetch_n(&mut first, 2).await?).await?;
    // A restarted worker may compute a different start or ack policy: the durable's
    // position wins, the start policy is ignored, the new limits apply.
    let rebind = ConsumerConfig {
        deliver_from: DeliverFrom::New,
        ack_wait: Duration::from_secs(5),
        max_ack_pending: 7,
        ..ConsumerConfig::new("w")
    };
    let mut second = bus.consumer("EVENTS", &rebind).await?;
    let got = fetch_n(&mut second, 1).await?;
    ensure!(payloads(&got) == ["2"], "rebound consumer got {:?}", payloads(&got));
    let other_filter =
        ConsumerConfig { filter_subject: Some("ev.other".into()), ..ConsumerConfig::new("w") };
    match bus.consumer("EVENTS", &other_filter).await {
        Err(Error::Config(_)) => Ok(()),
        Err(e) => bail!("changed filter: wrong error {e}"),
        Ok(_) => bail!("changed filter accepted"),
    }
}
