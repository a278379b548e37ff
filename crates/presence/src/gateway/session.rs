//! One client stream on a gateway: sends a Ping on every tick of its slot, turns each EVEN/ODD
//! Pong into a report, and closes the stream when the client stops answering.
//!
//! The session *is* the response body of `Attach`: the stream the HTTP/2 server polls to send
//! Pings also reads the Pongs. No task, no channel and no timer per client (a task and a
//! 2-slot channel were ~3 KB a client, and every Ping crossed two wake-ups); the tick comes
//! from the shared [`Ticker`](super::ticker::Ticker), reports go to the shared forwarder queue.
//! A client that does not read is not queued Pings: the server stops polling a stream whose
//! flow-control window is spent, and the ticks it misses meanwhile are counted as skipped.
use std::pin::Pin;
use std::time::{Duration, Instant};

use switchboard_core::Clock;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::Instrument as _;

use super::forwarder::ReportSender;
use crate::proto::{Ping, Pong, Status};
use crate::report::Report;

/// The response body of `Attach`: the session, polled by the server.
pub type PingStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Ping, tonic::Status>> + Send>>;

/// Why a session ended (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side, or went away (stream reset, connection lost).
    ClientClosed,
    /// The stream failed while reading a Pong (a malformed message, a protocol error).
    StreamError,
    /// No Pong within the client timeout: a dead or stuck client.
    TimedOut,
    /// The gateway is draining.
    Draining,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::StreamError => "stream_error",
            Self::TimedOut => "timed_out",
            Self::Draining => "draining",
        }
    }
}

/// Metric handles shared by all sessions: registered once, so the per-Ping and per-Pong cost is
/// an atomic add instead of a registry lookup.
pub struct SessionMetrics {
    sessions: metrics::Gauge,
    pings: metrics::Counter,
    pings_skipped: metrics::Counter,
    pongs: metrics::Counter,
    pongs_unknown: metrics::Counter,
    pongs_invalid: metrics::Counter,
    shed: metrics::Counter,
}

impl SessionMetrics {
    /// Registers the handles.
    pub fn new() -> Self {
        Self {
            sessions: metrics::gauge!("presence_gateway_sessions"),
            pings: metrics::counter!("presence_gateway_pings_total"),
            pings_skipped: metrics::counter!("presence_gateway_pings_skipped_total"),
            pongs: metrics::counter!("presence_gateway_pongs_total"),
            pongs_unknown: metrics::counter!("presence_gateway_pongs_unknown_total"),
            pongs_invalid: metrics::counter!("presence_gateway_pongs_invalid_total"),
            shed: metrics::counter!("presence_gateway_reports_shed_total"),
        }
    }
}

/// Everything one session needs.
pub struct Session {
    /// The client's id.
    pub client: u128,
    /// Tick receiver of the client's slot.
    pub tick: watch::Receiver<u64>,
    /// Pongs from the client.
    pub inbound: Streaming<Pong>,
    /// The forwarder queue.
    pub reports: ReportSender,
    /// Stamps reports.
    pub clock: std::sync::Arc<dyn Clock>,
    /// A client that sent no Pong for this long is dropped.
    pub timeout: Duration,
    /// Gateway shutdown.
    pub shutdown: CancellationToken,
    /// Shared metric handles.
    pub metrics: std::sync::Arc<SessionMetrics>,
}

/// Counts a session from its start until it is dropped, however it ends (the server drops the
/// body of a reset stream without polling it again), and holds its `--max-clients` slot.
struct Held {
    metrics: std::sync::Arc<SessionMetrics>,
    end: End,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.sessions.decrement(1.0);
        metrics::counter!("presence_gateway_sessions_ended_total", "reason" => self.end.label())
            .increment(1);
        tracing::debug!(reason = self.end.label(), "session ended");
    }
}

/// A session while its stream is open.
struct Live {
    session: Session,
    held: Held,
    last_pong: Instant,
    /// The slot's tick count at the last Ping (a jump of more than one: Pings skipped).
    last_tick: u64,
    /// The first Ping goes out at once, so a client learns quickly that the stream works.
    started: bool,
    ended: bool,
}

impl Session {
    /// The response stream of this session, holding `slot` until it ends. `span` is entered
    /// whenever the stream is polled.
    pub fn into_stream(self, slot: OwnedSemaphorePermit, span: tracing::Span) -> PingStream {
        self.metrics.sessions.increment(1.0);
        let held = Held { metrics: self.metrics.clone(), end: End::ClientClosed, _slot: slot };
        let last_tick = *self.tick.borrow();
        let live = Live {
            session: self,
            held,
            last_pong: Instant::now(),
            last_tick,
            started: false,
            ended: false,
        };
        Box::pin(futures::stream::unfold(live, move |mut live| {
            async move {
                let item = live.next().await?;
                Some((item, live))
            }
            .instrument(span.clone())
        }))
    }

    fn ping(&self) -> Option<Result<Ping, tonic::Status>> {
        self.metrics.pings.increment(1);
        Some(Ok(Ping {}))
    }

    fn on_pong(&self, pong: &Pong) {
        self.metrics.pongs.increment(1);
        let status = match Status::try_from(pong.status) {
            Ok(s @ (Status::Even | Status::Odd)) => s,
            Ok(Status::Unknown) => {
                // UNKNOWN is an answer but not presence.
                self.metrics.pongs_unknown.increment(1);
                return;
            }
            Err(_) => {
                self.metrics.pongs_invalid.increment(1);
                tracing::debug!(status = pong.status, "Pong with an undefined status ignored");
                return;
            }
        };
        let report = Report { client: self.client, seen_ms: self.clock.now_ms(), status };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.reports.try_send(report) {
            self.metrics.shed.increment(1);
            shed_log();
        }
    }
}

impl Live {
    /// The next item of the response: a Ping, the final status, or the end (`None`).
    async fn next(&mut self) -> Option<Result<Ping, tonic::Status>> {
        if self.ended {
            return None;
        }
        let s = &mut self.session;
        if !self.started {
            self.started = true;
            s.tick.mark_unchanged();
            return s.ping();
        }
        loop {
            tokio::select! {
                () = s.shutdown.cancelled() => {
                    return self.end(End::Draining, Some(tonic::Status::unavailable("gateway draining; reconnect")));
                }
                changed = s.tick.changed() => {
                    if changed.is_err() {
                        return self.end(End::Draining, None);
                    }
                    let tick = *s.tick.borrow_and_update();
                    let missed = tick.saturating_sub(self.last_tick).saturating_sub(1);
                    self.last_tick = tick;
                    if missed > 0 {
                        // The server did not poll this stream (its window was spent): the
                        // client is not reading. It gets one Ping now, not a backlog.
                        s.metrics.pings_skipped.increment(missed);
                    }
                    if self.last_pong.elapsed() > s.timeout {
                        let status = tonic::Status::deadline_exceeded("no Pong within the client timeout");
                        return self.end(End::TimedOut, Some(status));
                    }
                    return s.ping();
                }
                msg = s.inbound.message() => match msg {
                    Ok(Some(pong)) => {
                        self.last_pong = Instant::now();
                        s.on_pong(&pong);
                    }
                    Ok(None) => return self.end(End::ClientClosed, None),
                    Err(status) => {
                        tracing::debug!(%status, "client stream failed");
                        return self.end(End::StreamError, None);
                    }
                },
            }
        }
    }

    /// Ends the session for `why`, with `status` as the stream's last item (else it ends OK).
    fn end(
        &mut self,
        why: End,
        status: Option<tonic::Status>,
    ) -> Option<Result<Ping, tonic::Status>> {
        self.held.end = why;
        self.ended = true;
        status.map(Err)
    }
}

/// Logs shedding at most once a second per process: under overload one line per report would
/// itself be the next overload.
fn shed_log() {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = switchboard_core::SystemClock.now_ms() / 1000;
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("report queue full: shedding reports (bus slow or down)");
    }
}
