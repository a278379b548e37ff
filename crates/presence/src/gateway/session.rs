//! One client stream on a gateway: sends a Ping on every tick of its slot, turns each EVEN/ODD
//! Pong into a report, and closes the stream when the client stops answering.
//!
//! One task per stream, and nothing else per stream: the tick comes from the shared
//! [`Ticker`](super::ticker::Ticker), Pings go through a 2-slot channel that *is* the response
//! body, reports go to the shared forwarder queue.
use std::time::{Duration, Instant};

use switchboard_core::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::forwarder::ReportSender;
use crate::proto::{Ping, Pong, Status};
use crate::report::Report;

/// What a session sends its client. Deliberately tiny: the channel's slot block is allocated
/// per stream, and `Result<Ping, tonic::Status>` would make it ~6 KB per client.
#[derive(Debug, Clone, Copy)]
pub enum Out {
    /// One Ping.
    Ping,
    /// End the stream with this status.
    End(tonic::Code, &'static str),
}

impl Out {
    /// The gRPC message or final status this stands for.
    pub fn into_item(self) -> Result<Ping, tonic::Status> {
        match self {
            Self::Ping => Ok(Ping {}),
            Self::End(code, message) => Err(tonic::Status::new(code, message)),
        }
    }
}

/// Outbound half of a stream: feeds the response body of `Attach`.
pub type PingSender = mpsc::Sender<Out>;

/// Why a session ended (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side.
    ClientClosed,
    /// The stream failed (reset, connection lost).
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
    /// Pings to the client.
    pub outbound: PingSender,
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

impl Session {
    /// Runs until the client leaves, times out, or the gateway drains.
    pub async fn run(mut self) -> End {
        self.metrics.sessions.increment(1.0);
        let end = self.serve().await;
        self.metrics.sessions.decrement(1.0);
        metrics::counter!("presence_gateway_sessions_ended_total", "reason" => end.label())
            .increment(1);
        tracing::debug!(reason = end.label(), "session ended");
        end
    }

    async fn serve(&mut self) -> End {
        let mut last_pong = Instant::now();
        // The first Ping goes out at once so a client learns quickly that the stream works.
        if !self.ping() {
            return End::ClientClosed;
        }
        self.tick.mark_unchanged();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    let _ = self.outbound.try_send(Out::End(tonic::Code::Unavailable, "gateway draining; reconnect"));
                    return End::Draining;
                }
                changed = self.tick.changed() => {
                    if changed.is_err() {
                        return End::Draining;
                    }
                    if last_pong.elapsed() > self.timeout {
                        let _ = self.outbound.try_send(Out::End(
                            tonic::Code::DeadlineExceeded,
                            "no Pong within the client timeout",
                        ));
                        return End::TimedOut;
                    }
                    if !self.ping() {
                        return End::ClientClosed;
                    }
                }
                msg = self.inbound.message() => match msg {
                    Ok(Some(pong)) => {
                        last_pong = Instant::now();
                        self.on_pong(&pong);
                    }
                    Ok(None) => return End::ClientClosed,
                    Err(status) => {
                        tracing::debug!(%status, "client stream failed");
                        return End::StreamError;
                    }
                },
                () = self.outbound.closed() => return End::ClientClosed,
            }
        }
    }

    /// Queues one Ping; `false` once the response stream is gone.
    fn ping(&self) -> bool {
        match self.outbound.try_send(Out::Ping) {
            Ok(()) => {
                self.metrics.pings.increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The client is not reading: one unread Ping is enough, skip this one.
                self.metrics.pings_skipped.increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
