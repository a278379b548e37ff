//! Conformance cases for core messaging: pub/sub with wildcards, queue groups,
//! request/reply, and input validation.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchboard_bus::{Bus, ConsumerConfig, Error, StreamConfig};

use crate::support::*;

pub async fn pubsub_wildcards(bus: Bus) -> Result<()> {
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

pub async fn queue_group_splits(bus: Bus) -> Result<()> {
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

pub async fn request_reply(bus: Bus) -> Result<()> {
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

    // Two responders: the requester takes the first answer and ignores the second.
    let mut answering = Vec::new();
    for name in ["A", "B"] {
        let mut sub = bus.subscribe("svc.twice").await?;
        answering.push(tokio::spawn(async move {
            if let Some(m) = sub.next().await {
                m.respond(body(name)).await.expect("respond");
            }
        }));
    }
    let reply = text(&bus.request("svc.twice", body("?"), PATIENCE).await?);
    ensure!(reply == "A" || reply == "B", "reply {reply:?}");
    for task in answering {
        task.await?;
    }
    Ok(())
}

pub async fn invalid_subjects_are_rejected(bus: Bus) -> Result<()> {
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
