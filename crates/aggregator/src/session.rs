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
pub(crate) async fn run<S>(ws: S, intake: &mut Intake, shutdown: &CancellationToken) -> End
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>>
        + futures::Sink<Message, Error = tungstenite::Error>
        + Send
        + 'static,
{
    let (sink, mut stream) = ws.split();
    let stop = CancellationToken::new();
    let drain = CancellationToken::new();
    let mut writer =
        tokio::spawn(write_loop(sink, intake.outbox().clone(), stop.clone(), drain.clone()));
    // Stop the writer whichever way this function returns.
    let _stop_writer = stop.clone().drop_guard();

    // Futures created once: re-creating them per frame would re-register wakers every time.
    let boundary = tokio::time::sleep(intake.until_due());
    let cancelled = shutdown.cancelled();
    tokio::pin!(boundary, cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            () = &mut boundary => {
                intake.close_if_due();
                boundary.as_mut().reset(Instant::now() + intake.until_due());
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
                    // Take what is already buffered without re-polling the other branches.
                    for _ in 0..BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(msg))) => intake.on_message(&msg),
                            Some(Some(Err(e))) => return End::Lost(format!("read failed: {e}")),
                            Some(None) => return End::Lost("closed by server".to_owned()),
                            None => break,
                        }
                    }
                    // Buffered frames come back without ever yielding; spending the
                    // cooperative budget lets the runtime fire the window timer on time even
                    // when the socket never runs dry.
                    tokio::task::consume_budget().await;
                }
                Some(Err(e)) => return End::Lost(format!("read failed: {e}")),
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
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not send the final report"),
        Ok(Err(e)) => tracing::warn!(error = %e, "writer task failed"),
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

/// Sends queued reports in order; acknowledges each one only after it was written.
async fn write_loop<K>(
    mut sink: K,
    outbox: Arc<Outbox>,
    stop: CancellationToken,
    drain: CancellationToken,
) -> Result<(), tungstenite::Error>
where
    K: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    loop {
        while let Some(report) = outbox.front() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                res = sink.send(Message::text(&*report.text)) => res?,
            }
            outbox.ack(report.seq);
            metrics::counter!("aggregator_reports_sent_total").increment(1);
            tracing::debug!(window = report.window, bytes = report.text.len(), "report sent");
        }
        if drain.is_cancelled() {
            return sink.close().await;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = drain.cancelled() => {}
            () = outbox.wait() => {}
        }
    }
}
