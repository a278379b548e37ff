//! One websocket connection: the reading loop and its writer task.
//!
//! The reading loop owns the [`Intake`] and also closes windows on time, so counting never
//! waits for the socket's write side: reports go to the [`Outbox`] and a separate writer task
//! sends them. The session ends when the server goes away (the caller reconnects) or on
//! shutdown, where it flushes the open window, lets the writer send what is queued, and
//! completes the websocket close handshake so the last report is not lost to a TCP reset.
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;
use crate::outbox::Outbox;

/// Frames taken per wake-up once the socket has data; a batch lasts microseconds, so window
/// boundaries are still honoured to well under a millisecond.
const BATCH: usize = 64;

/// How long shutdown waits for the queued reports and the server's close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Shutdown was requested; the open window was flushed.
    Shutdown,
    /// The connection was lost or closed by the server.
    Lost(String),
}

/// Runs one connection until it is lost or `shutdown` is cancelled.
///
/// The connection counts as lost when nothing at all (not even the pong to our pings, sent
/// every third of `idle_timeout`) arrives for `idle_timeout`: a half-open TCP connection would
/// otherwise stall the client forever.
pub(crate) async fn run<S>(
    ws: S,
    intake: &mut Intake,
    shutdown: &CancellationToken,
    idle_timeout: Duration,
) -> End
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>>
        + futures::Sink<Message, Error = tungstenite::Error>
        + Send
        + 'static,
{
    let (sink, mut stream) = ws.split();
    let stop = CancellationToken::new();
    let drain = CancellationToken::new();
    let ping_every = (idle_timeout / 3).max(Duration::from_millis(10));
    let mut writer = tokio::spawn(write_loop(
        sink,
        intake.outbox().clone(),
        ping_every,
        stop.clone(),
        drain.clone(),
    ));
    // Stop the writer whichever way this function returns.
    let _stop_writer = stop.clone().drop_guard();

    // Futures created once: re-creating them per frame would re-register wakers every time.
    let boundary = tokio::time::sleep(intake.until_due());
    let cancelled = shutdown.cancelled();
    tokio::pin!(boundary, cancelled);
    // Liveness is checked by counting frames between ticks, not by resetting a timer per frame.
    let check_every = (idle_timeout / 2).max(Duration::from_millis(10));
    let mut liveness = tokio::time::interval_at(Instant::now() + check_every, check_every);
    let (mut frames, mut frames_at_check, mut quiet_checks) = (0u64, 0u64, 0u32);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            () = &mut boundary => {
                intake.close_if_due();
                boundary.as_mut().reset(Instant::now() + intake.until_due());
            }
            _ = liveness.tick() => {
                if frames == frames_at_check {
                    quiet_checks += 1;
                    if quiet_checks >= 2 {
                        return End::Lost(format!("nothing received for {idle_timeout:?}"));
                    }
                } else {
                    (frames_at_check, quiet_checks) = (frames, 0);
                }
            }
            res = &mut writer => {
                let why = match res {
                    Ok(Err(e)) => format!("write failed: {e}"),
                    Ok(Ok(())) => "writer stopped".to_owned(),
                    Err(e) => format!("writer task failed: {e}"),
                };
                return End::Lost(why);
            }
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    intake.on_message(&msg);
                    frames += 1;
                    // Take what is already buffered without re-polling the other branches.
                    for _ in 0..BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(msg))) => {
                                intake.on_message(&msg);
                                frames += 1;
                            }
                            Some(Some(Err(e))) => return lost(intake, &e),
                            Some(None) => return End::Lost("closed by server".to_owned()),
                            None => break,
                        }
                    }
                    intake.publish();
                    // Buffered frames come back without ever yielding; spending the
                    // cooperative budget lets the runtime fire the window timer on time even
                    // when the socket never runs dry.
                    tokio::task::consume_budget().await;
                }
                Some(Err(e)) => return lost(intake, &e),
                None => return End::Lost("closed by server".to_owned()),
            },
        }
    }

    // Shutdown: the open window becomes the last report; the writer sends it and closes.
    intake.close_now();
    drain.cancel();
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    match tokio::time::timeout_at(deadline, &mut writer).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %switchboard_core::describe_error(&e), "could not send the final report")
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %switchboard_core::describe_error(&e), "writer task failed")
        }
        Err(_) => tracing::warn!("timed out sending the final report"),
    }
    // Read until the server answers our close, so the socket shuts down cleanly.
    let mut ignored = 0u64;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Text(_)) {
                ignored += 1;
            }
        }
    })
    .await;
    if ignored > 0 {
        tracing::info!(ignored, "frames received after the final flush were not counted");
    }
    End::Shutdown
}

/// The session's end after a read error; a frame over the websocket cap is reported loudly.
fn lost(intake: &mut Intake, e: &tungstenite::Error) -> End {
    if matches!(e, tungstenite::Error::Capacity(_)) {
        intake.frame_too_large(e);
    }
    End::Lost(format!("read failed: {e}"))
}

/// Sends queued reports in order, acknowledging each one only after it was written, and a
/// ping every `ping_every`.
async fn write_loop<K>(
    mut sink: K,
    outbox: Arc<Outbox>,
    ping_every: Duration,
    stop: CancellationToken,
    drain: CancellationToken,
) -> Result<(), tungstenite::Error>
where
    K: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    loop {
        while let Some(report) = outbox.front() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                res = sink.send(Message::text(&*report.text)) => res?,
            }
            outbox.ack(report.seq);
            metrics::counter!("aggregator_reports_sent_total").increment(1);
            crate::status::report_sent(report.window, &report.text);
            tracing::debug!(window = report.window, bytes = report.text.len(), "report sent");
        }
        if drain.is_cancelled() {
            return sink.close().await;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = drain.cancelled() => {}
            () = outbox.wait() => {}
            _ = ping.tick() => tokio::select! {
                () = stop.cancelled() => return Ok(()),
                res = sink.send(Message::Ping(Default::default())) => res?,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::SystemClock;
    use tokio::net::TcpListener;

    use super::*;
    use crate::window::{Limits, Schedule};

    fn intake() -> Intake {
        let limits = Limits { max_children: 10, max_parents: 10, max_pending: 10 };
        let schedule = Schedule::new(Duration::from_secs(3600), Arc::new(SystemClock));
        let frames = crate::protocol::FrameLimits::new(1024, 10);
        Intake::new(limits, frames, schedule, Arc::new(Outbox::new(4)))
    }

    /// A loopback websocket server; `answer` decides whether it reads (and so answers pings).
    async fn server(answer: bool) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            if answer {
                while let Some(Ok(_)) = ws.next().await {}
            } else {
                std::future::pending::<()>().await;
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_silent_server_is_detected_and_a_live_one_is_kept() {
        let idle = Duration::from_millis(300);
        let (url, silent) = server(false).await;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let end = tokio::time::timeout(
            Duration::from_secs(5),
            run(ws, &mut intake(), &CancellationToken::new(), idle),
        )
        .await
        .expect("a silent server must end the session");
        assert!(matches!(&end, End::Lost(why) if why.contains("nothing received")), "{end:?}");
        silent.abort();

        let (url, live) = server(true).await;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let shutdown = CancellationToken::new();
        let mut intake = intake();
        let session = run(ws, &mut intake, &shutdown, idle);
        tokio::pin!(session);
        // Pongs keep the session alive well past the idle timeout.
        assert!(tokio::time::timeout(idle * 4, &mut session).await.is_err(), "live session ended");
        shutdown.cancel();
        assert!(matches!(session.await, End::Shutdown));
        live.abort();
    }
}
