//! Durable-publish and consume throughput of both engines, with a reference in the same run.
//!
//! ```text
//! cargo run --release -p switchboard-bus --example throughput -- [messages] [batch] [payload_bytes]
//! ```
//! Starts its own throw-away nats-server (so it needs `nats-server` on PATH), then measures:
//! * `publish_durable_batch` on memory and on NATS (pipelined: all sent, then all acks awaited);
//! * the reference: one-at-a-time `publish_durable` on NATS (a round trip per message);
//! * consuming everything back with `fetch(batch)` + concurrent acks.
//!
//! Prints a table and one JSON line. Bounded: defaults to 50,000 messages.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use switchboard_bus::{Bus, Bytes, ConsumerConfig, StreamConfig};
use switchboard_testkit::NatsServer;

struct Row {
    name: &'static str,
    messages: usize,
    elapsed: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

fn arg(n: usize, default: usize) -> Result<usize> {
    std::env::args().nth(n).map_or(Ok(default), |s| s.parse().context("arguments are numbers"))
}

async fn publish_batches(
    bus: &Bus,
    messages: usize,
    batch: usize,
    payload: &Bytes,
) -> Result<Duration> {
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let n = batch.min(messages - sent);
        let items = (0..n).map(|_| ("bench.events".to_owned(), payload.clone(), None)).collect();
        bus.publish_durable_batch(items).await?;
        sent += n;
    }
    Ok(started.elapsed())
}

async fn publish_one_by_one(bus: &Bus, messages: usize, payload: &Bytes) -> Result<Duration> {
    let started = Instant::now();
    for _ in 0..messages {
        bus.publish_durable("bench.events", payload.clone(), None).await?;
    }
    Ok(started.elapsed())
}

async fn consume_all(bus: &Bus, messages: usize, batch: usize) -> Result<Duration> {
    let mut consumer = bus.consumer("BENCH", &ConsumerConfig::new("bench")).await?;
    let started = Instant::now();
    let mut got = 0;
    while got < messages {
        let deliveries = consumer.fetch(batch, Duration::from_secs(5)).await?;
        ensure!(!deliveries.is_empty(), "stream ran dry after {got} of {messages}");
        futures::future::try_join_all(deliveries.iter().map(|d| d.ack())).await?;
        got += deliveries.len();
    }
    Ok(started.elapsed())
}

async fn fresh_stream(bus: &Bus) -> Result<()> {
    bus.ensure_stream(&StreamConfig::new("BENCH", ["bench.>"])).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let messages = arg(1, 50_000)?;
    let batch = arg(2, 1_000)?.max(1);
    let payload = Bytes::from(vec![b'x'; arg(3, 200)?]);
    let reference_messages = (messages / 10).max(1);

    let memory = Bus::memory();
    fresh_stream(&memory).await?;
    let server = NatsServer::start();
    let nats = Bus::connect(&server.url).await?;
    fresh_stream(&nats).await?;

    let row = |name, messages, elapsed| Row { name, messages, elapsed };
    let rows = [
        row(
            "memory publish_durable_batch",
            messages,
            publish_batches(&memory, messages, batch, &payload).await?,
        ),
        row("memory fetch + ack", messages, consume_all(&memory, messages, batch).await?),
        row(
            "nats publish_durable_batch",
            messages,
            publish_batches(&nats, messages, batch, &payload).await?,
        ),
        row("nats fetch + ack", messages, consume_all(&nats, messages, batch).await?),
        row(
            "reference: nats publish_durable, one at a time",
            reference_messages,
            publish_one_by_one(&nats, reference_messages, &payload).await?,
        ),
    ];

    println!("bus throughput: {messages} messages, batch {batch}, {} B payload", payload.len());
    println!("{:<48} {:>10} {:>10} {:>12}", "case", "messages", "seconds", "msg/s");
    for r in &rows {
        println!(
            "{:<48} {:>10} {:>10.3} {:>12.0}",
            r.name,
            r.messages,
            r.elapsed.as_secs_f64(),
            r.rate()
        );
    }
    let pipelined = rows[2].rate() / rows[4].rate();
    println!("pipelining speed-up on NATS: {pipelined:.1}x over one-at-a-time");
    let cases: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                r#"{{"case":"{}","messages":{},"msg_per_s":{:.0}}}"#,
                r.name,
                r.messages,
                r.rate()
            )
        })
        .collect();
    println!(
        r#"{{"bench":"bus","messages":{messages},"batch":{batch},"payload_bytes":{},"pipelined_speedup":{pipelined:.2},"cases":[{}]}}"#,
        payload.len(),
        cases.join(",")
    );
    Ok(())
}
