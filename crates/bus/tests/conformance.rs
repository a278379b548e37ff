//! One conformance suite, run against both engines.
//!
//! Every case is an `async fn(Bus)`; the `conformance!` macro instantiates it once with a
//! fresh `Bus::memory()` and once with a `Bus` on its own throw-away `nats-server -js`.
//! NATS-only crash cases (lost connection, killed server) live in `nats_crash.rs`.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchboard_bus::{
    Bus, Bytes, Consumer, ConsumerConfig, DeliverFrom, Delivery, Error, StreamConfig, Subscription,
};

/// Upper bound for anything that should happen "promptly"; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(10);

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(switchboard_bus::Bus::memory()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                #[ignore = "the NATS engine lands in the next commit"]
                async fn $case() -> anyhow::Result<()> {
                    let server = switchboard_testkit::NatsServer::start();
                    let bus = switchboard_bus::Bus::connect(&server.url).await?;
                    super::$case(bus).await
                }
            )*
        }
    };
}

conformance!(
    pubsub_wildcards,
    queue_group_splits,
    request_reply,
    invalid_subjects_are_rejected,
    durable_publish_then_consume,
    unacked_is_redelivered_after_ack_wait,
    nak_redelivers_after_delay,
    shared_durable_splits_without_duplicates,
    max_ack_pending_applies_backpressure,
    dedup_by_msg_id,
    deliver_from_new_and_time,
    bounded_stream_discards_oldest,
    fetch_wakes_on_publish,
);

fn body(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn recv(sub: &mut Subscription) -> Result<(String, String)> {
    let m = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .context("no message in time")?
        .context("subscription closed")?;
    Ok((m.subject.clone(), text(&m.payload)))
}

/// Fetches until exactly `n` deliveries arrived (or fails after [`PATIENCE`]).
async fn fetch_n(c: &mut Consumer, n: usize) -> Result<Vec<Delivery>> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        ensure!(Instant::now() < deadline, "only {} of {n} deliveries arrived", got.len());
        got.extend(c.fetch(n - got.len(), Duration::from_secs(1)).await?);
    }
    Ok(got)
}

/// Asserts nothing (more) is delivered within `wait`.
async fn expect_empty(c: &mut Consumer, wait: Duration) -> Result<()> {
    let extra = c.fetch(10, wait).await?;
    let seqs: Vec<u64> = extra.iter().map(|d| d.stream_seq).collect();
    ensure!(seqs.is_empty(), "unexpected deliveries {seqs:?}");
    Ok(())
}

async fn ack_all(ds: &[Delivery]) -> Result<()> {
    for d in ds {
        d.ack().await?;
    }
    Ok(())
}

fn payloads(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| text(&d.payload)).collect()
}

async fn events_stream(bus: &Bus, f: impl FnOnce(&mut StreamConfig)) -> Result<()> {
    let mut cfg = StreamConfig::new("EVENTS", ["ev.>"]);
    f(&mut cfg);
    bus.ensure_stream(&cfg).await?;
    Ok(())
}

async fn publish_numbered(bus: &Bus, range: std::ops::Range<u32>) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for i in range {
        seqs.push(bus.publish_durable("ev.n", body(i.to_string()), None).await?);
    }
    Ok(seqs)
}

async fn pubsub_wildcards(bus: Bus) -> Result<()> {
    let patterns = ["t.*.c", "t.>", "t.b.c", "*.b.c"];
    let mut subs = Vec::new();
    for p in patterns {
        subs.push(bus.subscribe(p).await?);
    }
    for s in ["t.x.c", "t.b", "u.b.c", "t.b.c.d", "other", "t"] {
        bus.publish(s, body("m")).await?;
    }
    // "t.b.c" matches every pattern: it marks the end of each subscriber's stream.
    bus.publish("t.b.c", body("end")).await?;
    let expected: [&[&str]; 4] = [
        &["t.x.c", "t.b.c"],
        &["t.x.c", "t.b", "t.b.c.d", "t.b.c"],
        &["t.b.c"],
        &["u.b.c", "t.b.c"],
    ];
    for ((pattern, sub), want) in patterns.iter().zip(&mut subs).zip(expected) {
        let mut got = Vec::new();
        loop {
            let (subject, payload) = recv(sub).await?;
            got.push(subject);
            if payload == "end" {
                break;
            }
        }
        ensure!(got == want, "{pattern}: got {got:?}, want {want:?}");
    }
    Ok(())
}

async fn queue_group_splits(bus: Bus) -> Result<()> {
    let mut members =
        [bus.queue_subscribe("jobs", "g").await?, bus.queue_subscribe("jobs", "g").await?];
    let mut watcher = bus.subscribe("jobs").await?;
    let n = 100;
    for i in 0..n {
        bus.publish("jobs", body(i.to_string())).await?;
    }
    for i in 0..n {
        ensure!(recv(&mut watcher).await?.1 == i.to_string(), "plain subscriber misses {i}");
    }
    let mut seen = BTreeSet::new();
    let mut per_member = [0; 2];
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < n {
        ensure!(Instant::now() < deadline, "queue group received {} of {n}", seen.len());
        let [a, b] = &mut members;
        let (who, m) = tokio::select! {
            m = a.next() => (0, m),
            m = b.next() => (1, m),
        };
        let m = m.context("queue subscription closed")?;
        per_member[who] += 1;
        ensure!(seen.insert(text(&m.payload)), "{} delivered twice", text(&m.payload));
    }
    ensure!(per_member.iter().all(|&c| c > 0), "one member got everything: {per_member:?}");
    Ok(())
}

async fn request_reply(bus: Bus) -> Result<()> {
    let mut service = bus.subscribe("svc.echo").await?;
    let responder = tokio::spawn(async move {
        while let Some(m) = service.next().await {
            assert!(m.expects_reply(), "request without reply handle");
            let answer = format!("{}!", text(&m.payload));
            m.respond(body(answer)).await.expect("respond");
        }
    });
    for i in 0..3 {
        let reply = bus.request("svc.echo", body(format!("hi{i}")), PATIENCE).await?;
        ensure!(text(&reply) == format!("hi{i}!"), "wrong reply {reply:?}");
    }
    // A plain publish carries no reply handle and must not break the responder.
    let mut plain = bus.subscribe("svc.plain").await?;
    bus.publish("svc.plain", body("x")).await?;
    let m = tokio::time::timeout(PATIENCE, plain.next()).await?.context("closed")?;
    ensure!(!m.expects_reply(), "plain publish expects a reply");

    let _silent = bus.subscribe("svc.silent").await?;
    let started = Instant::now();
    match bus.request("svc.silent", body("?"), Duration::from_millis(300)).await {
        Err(Error::Timeout(_)) => {}
        other => bail!("expected a timeout, got {:?}", other.map(|b| text(&b))),
    }
    ensure!(started.elapsed() >= Duration::from_millis(300), "timed out early");
    match bus.request("svc.nobody", body("?"), PATIENCE).await {
        Err(Error::NoResponders(subject)) => ensure!(subject == "svc.nobody"),
        other => bail!("expected no responders, got {:?}", other.map(|b| text(&b))),
    }
    responder.abort();
    Ok(())
}

async fn invalid_subjects_are_rejected(bus: Bus) -> Result<()> {
    for bad in ["", "a..b", "a b", "a.*", "a.>"] {
        let err = bus.publish(bad, body("x")).await.expect_err(bad);
        ensure!(matches!(err, Error::InvalidSubject(_)), "{bad:?}: {err}");
    }
    ensure!(matches!(bus.subscribe("a.>.b").await.err(), Some(Error::InvalidSubject(_))));
    let overlapping = StreamConfig::new("B", ["ev.x"]);
    events_stream(&bus, |_| {}).await?;
    ensure!(matches!(bus.ensure_stream(&overlapping).await, Err(Error::Config(_))));
    let bad_name = StreamConfig::new("no spaces", ["zz"]);
    ensure!(matches!(bus.ensure_stream(&bad_name).await, Err(Error::Config(_))));
    let missing = bus.consumer("NOPE", &ConsumerConfig::new("w")).await;
    ensure!(matches!(missing.err(), Some(Error::NotFound(_))), "consumer on a missing stream");
    Ok(())
}

async fn durable_publish_then_consume(bus: Bus) -> Result<()> {
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
    let got = fetch_n(&mut c, 20).await?;
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    ensure!(payloads(&got) == want, "payloads {:?}", payloads(&got));
    ensure!(got.iter().map(|d| d.stream_seq).eq(1..=20), "stream sequences out of order");
    ensure!(got.iter().all(|d| d.delivered == 1), "first delivery must count 1");
    ensure!(got[12].subject == "ev.b.12", "subject {}", got[12].subject);
    let now_ms = i64::try_from(std::time::UNIX_EPOCH.elapsed()?.as_millis())?;
    ensure!(got.iter().all(|d| (now_ms - d.published_ms).abs() < 60_000), "published_ms");
    ack_all(&got).await?;
    expect_empty(&mut c, Duration::from_millis(200)).await?;

    // The same durable name, bound again, resumes after the acked messages.
    drop(c);
    publish_numbered(&bus, 20..21).await?;
    let mut again = bus.consumer("EVENTS", &ConsumerConfig::new("worker")).await?;
    let got = fetch_n(&mut again, 1).await?;
    ensure!(payloads(&got) == ["20"], "resumed at {:?}", payloads(&got));
    Ok(())
}

async fn unacked_is_redelivered_after_ack_wait(bus: Bus) -> Result<()> {
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

async fn nak_redelivers_after_delay(bus: Bus) -> Result<()> {
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

async fn shared_durable_splits_without_duplicates(bus: Bus) -> Result<()> {
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

async fn max_ack_pending_applies_backpressure(bus: Bus) -> Result<()> {
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..5).await?;
    let cfg = ConsumerConfig { max_ack_pending: 2, ..ConsumerConfig::new("w") };
    let mut c = bus.consumer("EVENTS", &cfg).await?;
    let first = c.fetch(10, Duration::from_secs(1)).await?;
    ensure!(payloads(&first) == ["0", "1"], "got {:?}", payloads(&first));
    expect_empty(&mut c, Duration::from_millis(300)).await?;
    first[0].ack().await?;
    let next = fetch_n(&mut c, 1).await?;
    ensure!(payloads(&next) == ["2"], "after one ack got {:?}", payloads(&next));
    Ok(())
}

async fn dedup_by_msg_id(bus: Bus) -> Result<()> {
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

async fn deliver_from_new_and_time(bus: Bus) -> Result<()> {
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

async fn bounded_stream_discards_oldest(bus: Bus) -> Result<()> {
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

/// Drains (and acks) a consumer, returning the subjects it held.
async fn drain(c: &mut Consumer) -> Result<Vec<String>> {
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

async fn fetch_wakes_on_publish(bus: Bus) -> Result<()> {
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
