//! NATS-only crash cases: what JetStream keeps when a worker process or the server dies,
//! and a clear error when there is no server at all.
//!
//! The worker crash is real: the test re-runs this test binary as a child process that
//! consumes, acks part of what it got, reports, and is then killed with SIGKILL.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchboard_bus::{Bus, ConsumerConfig};
use switchboard_testkit::NatsServer;

use crate::support::{PATIENCE, ack_all, events_stream, expect_empty, fetch_n, publish_numbered};

/// Env var through which the parent hands the server URL to the worker child.
const CHILD_URL: &str = "SWITCHBOARD_TEST_CRASH_WORKER_NATS";
/// Line the child prints once its acks are confirmed and it holds unacked messages.
const CHILD_READY: &str = "crash-worker: acked 5, holding 3";

fn worker_cfg() -> ConsumerConfig {
    ConsumerConfig { ack_wait: Duration::from_secs(1), ..ConsumerConfig::new("worker") }
}

/// The child's side of [`worker_process_crash_keeps_durable_position`]: not a test of its own,
/// so it is ignored and does nothing unless the parent started it.
#[tokio::test]
#[ignore = "child process of crash::worker_process_crash_keeps_durable_position"]
async fn worker_child() -> Result<()> {
    let Ok(url) = std::env::var(CHILD_URL) else { return Ok(()) };
    let bus = Bus::connect(&url).await?;
    let mut c = bus.consumer("EVENTS", &worker_cfg()).await?;
    let got = fetch_n(&mut c, 8).await?;
    ack_all(&got[..5]).await?; // confirmed by the server before we report
    println!("{CHILD_READY}");
    // Hold the rest unacked until the parent kills us.
    tokio::time::sleep(PATIENCE * 6).await;
    bail!("crash worker was not killed")
}

#[tokio::test]
async fn worker_process_crash_keeps_durable_position() -> Result<()> {
    let server = NatsServer::start();
    let bus = Bus::connect(&server.url).await?;
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..10).await?;

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "crash::worker_child", "--ignored", "--nocapture"])
        .env(CHILD_URL, &server.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the worker child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    // Blocking reads belong off the runtime threads.
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line == CHILD_READY)
    });
    let ready = tokio::time::timeout(PATIENCE * 3, ready).await.context("child never ready")??;
    child.kill()?; // SIGKILL: no cleanup, no goodbye to the server
    child.wait()?;
    ensure!(ready, "child exited before reporting");

    let mut survivor = bus.consumer("EVENTS", &worker_cfg()).await?;
    let got = fetch_n(&mut survivor, 5).await?;
    let by_seq: BTreeMap<u64, u64> = got.iter().map(|d| (d.stream_seq, d.delivered)).collect();
    let want = BTreeMap::from([(6, 2), (7, 2), (8, 2), (9, 1), (10, 1)]);
    ensure!(by_seq == want, "after the crash got (seq, delivered) {by_seq:?}, want {want:?}");
    ack_all(&got).await?;
    expect_empty(&mut survivor, Duration::from_millis(1_500)).await
}

#[tokio::test]
async fn server_crash_keeps_stream_and_consumer() -> Result<()> {
    let mut server = NatsServer::start();
    let bus = Bus::connect(&server.url).await?;
    events_stream(&bus, |_| {}).await?;
    publish_numbered(&bus, 0..10).await?;
    let mut c = bus.consumer("EVENTS", &worker_cfg()).await?;
    ack_all(&fetch_n(&mut c, 4).await?).await?;

    server.kill(); // SIGKILL
    server.restart();

    // The client reconnects by itself; publishing works again once it has.
    let deadline = Instant::now() + PATIENCE * 2;
    let seq = loop {
        match bus.publish_durable("ev.n", "10".into(), Some("after-restart")).await {
            Ok(seq) => break seq,
            Err(e) if Instant::now() < deadline => log_transient(&e),
            Err(e) => bail!("no publish after restart: {e}"),
        }
    };
    ensure!(seq == 11, "stream lost messages across the crash: new message got seq {seq}");

    // Nothing unacked is lost. JetStream flushes consumer acks lazily, so acks from just
    // before a hard kill may be forgotten: those redeliveries are at-least-once, allowed.
    let mut seen = BTreeSet::new();
    while !(5..=11).all(|s| seen.contains(&s)) {
        ensure!(Instant::now() < deadline, "after restart only got {seen:?}");
        match c.fetch(20, Duration::from_millis(500)).await {
            Ok(got) => {
                seen.extend(got.iter().map(|d| d.stream_seq));
                ack_all(&got).await?;
            }
            Err(e) => log_transient(&e),
        }
    }
    Ok(())
}

/// Transient errors while the client reconnects are expected; show them for diagnosis.
fn log_transient(e: &switchboard_bus::Error) {
    eprintln!("while nats restarts: {e}");
}

#[tokio::test]
async fn connecting_to_a_dead_server_fails_clearly() -> Result<()> {
    let url = format!("nats://127.0.0.1:{}", switchboard_testkit::free_port());
    let started = Instant::now();
    match Bus::connect(&url).await {
        Err(switchboard_bus::Error::Engine(msg)) => ensure!(msg.contains(&url), "{msg}"),
        Err(e) => bail!("wrong error kind: {e}"),
        Ok(_) => bail!("connected to nothing at {url}"),
    }
    ensure!(started.elapsed() < PATIENCE, "connect hung for {:?}", started.elapsed());
    match Bus::connect("redis://127.0.0.1:6379").await {
        Err(switchboard_bus::Error::UnsupportedUrl(_)) => Ok(()),
        other => bail!("unsupported scheme accepted: {:?}", other.err()),
    }
}
