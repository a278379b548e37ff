//! One client stream on a gateway: the `Attach` call as the gateway's own HTTP/2 transport
//! ([`super::conn`]) sees it. [`Sessions::open`] admits a client (id, token, `--max-clients`
//! slot) from the call's headers; [`Session::on_data`] turns each EVEN/ODD Pong of the request
//! body into a report. The connection writes the Pings on its slot's tick and ends the call
//! with the [`Fail`] or [`End`] these return.
//!
//! No task, channel, timer or buffer per client: a session is its id, the time of its last
//! Pong, its slot and (only while a Pong is split across DATA frames) the bytes of the part.
use std::time::{Duration, Instant};

use prost::Message as _;
use switchboard_core::Clock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::CLIENT_ID_HEADER;
use super::forwarder::ReportSender;
use crate::auth::{CLIENT_TOKEN_HEADER, ClientAuth};
use crate::proto::{Pong, Status};
use crate::report::Report;

/// Largest Pong message accepted, bytes (one is 2 on the wire; tonic's default cap is 4 MiB,
/// which a gateway holding 100,000 clients cannot buffer for each).
pub const MAX_PONG: usize = 1024;

/// Why a session ended (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side, or went away (stream reset, connection lost).
    ClientClosed,
    /// The request body was not a stream of Pongs (malformed, compressed, too large).
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

/// A call refused or ended with a gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: tonic::Code,
    pub message: &'static str,
}

impl Fail {
    const fn new(code: tonic::Code, message: &'static str) -> Self {
        Self { code, message }
    }
}

/// Metric handles shared by all sessions: registered once, so the per-Ping and per-Pong cost is
/// an atomic add instead of a registry lookup.
pub struct SessionMetrics {
    sessions: metrics::Gauge,
    pub(super) pings: metrics::Counter,
    pub(super) pings_skipped: metrics::Counter,
    pongs: metrics::Counter,
    pongs_unknown: metrics::Counter,
    pongs_invalid: metrics::Counter,
    shed: metrics::Counter,
    refused: metrics::Counter,
    unauthenticated: metrics::Counter,
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
            refused: metrics::counter!("presence_gateway_refused_total"),
            unauthenticated: metrics::counter!("presence_gateway_unauthenticated_total"),
        }
    }
}

/// What every session of a gateway shares.
pub struct Sessions {
    /// The forwarder queue.
    pub reports: ReportSender,
    /// Stamps reports.
    pub clock: std::sync::Arc<dyn Clock>,
    /// A client that sent no Pong for this long is dropped.
    pub timeout: Duration,
    /// `--max-clients` slots.
    pub slots: std::sync::Arc<Semaphore>,
    /// With `--client-auth-key`: the check of each client's token.
    pub auth: Option<ClientAuth>,
    /// Gateway shutdown: no session is admitted once it is cancelled.
    pub shutdown: CancellationToken,
    /// Shared metric handles.
    pub metrics: std::sync::Arc<SessionMetrics>,
}

impl Sessions {
    /// Admits the client of an `Attach` call with these request headers, or says why not.
    pub fn open(&self, headers: http::HeaderMap) -> Result<Session, Fail> {
        let client = client_id(&headers)?;
        if let Some(auth) = &self.auth {
            let token = headers.get(CLIENT_TOKEN_HEADER).and_then(|t| t.to_str().ok());
            if !token.is_some_and(|t| auth.verify(uuid::Uuid::from_u128(client), t)) {
                self.metrics.unauthenticated.increment(1);
                return Err(Fail::new(
                    tonic::Code::Unauthenticated,
                    "missing or wrong `client-token` for this `client-id`",
                ));
            }
        }
        if self.shutdown.is_cancelled() {
            return Err(Fail::new(tonic::Code::Unavailable, "gateway draining; reconnect"));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.refused.increment(1);
            tracing::warn!("max-clients reached: refusing a client stream");
            return Err(Fail::new(
                tonic::Code::ResourceExhausted,
                "gateway full; try another gateway",
            ));
        };
        let span = tracing::info_span!("presence.gateway.session", client_id = %uuid::Uuid::from_u128(client));
        crate::trace::set_parent_from_metadata(
            &span,
            &tonic::metadata::MetadataMap::from_headers(headers),
        );
        self.metrics.sessions.increment(1.0);
        Ok(Session {
            client,
            last_pong: Instant::now(),
            partial: Vec::new(),
            held: Held { metrics: self.metrics.clone(), end: End::ClientClosed, span, _slot: slot },
        })
    }

    fn on_pong(&self, client: u128, pong: &Pong) {
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
        let report = Report { client, seen_ms: self.clock.now_ms(), status };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.reports.try_send(report) {
            self.metrics.shed.increment(1);
            shed_log();
        }
    }
}

/// A session's slot and its end: counted when it is dropped, so a session lost with its
/// connection frees its slot and is counted too.
struct Held {
    metrics: std::sync::Arc<SessionMetrics>,
    end: End,
    span: tracing::Span,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.sessions.decrement(1.0);
        let _enter = self.span.enter();
        metrics::counter!("presence_gateway_sessions_ended_total", "reason" => self.end.label())
            .increment(1);
        tracing::debug!(reason = self.end.label(), "session ended");
    }
}

/// One client's `Attach` call.
pub struct Session {
    client: u128,
    last_pong: Instant,
    /// The start of a Pong split across DATA frames (empty, unallocated, between Pongs).
    partial: Vec<u8>,
    held: Held,
}

impl Session {
    /// Ends the session for `why` (frees its slot, counts the end).
    pub fn end(mut self, why: End) {
        self.held.end = why;
    }

    /// The client's id.
    pub fn client(&self) -> u128 {
        self.client
    }

    /// Whether the client has sent no Pong for longer than `timeout`.
    pub fn silent(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.last_pong) > timeout
    }

    /// Takes the request body bytes of one DATA frame: the gRPC messages (a 5-byte prefix,
    /// then a Pong) it completes become reports.
    ///
    /// # Errors
    /// A compressed, oversized or malformed message: the call ends with this status.
    pub fn on_data(&mut self, sessions: &Sessions, data: &[u8]) -> Result<(), Fail> {
        if self.partial.is_empty() {
            let used = self.take(sessions, data)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.take(sessions, &buf)?;
            buf.drain(..used);
            // Keep the allocation only while a part is pending.
            self.partial = if buf.is_empty() { Vec::new() } else { buf };
        }
        Ok(())
    }

    /// Handles the whole messages at the start of `buf`; returns the bytes they took.
    fn take(&mut self, sessions: &Sessions, buf: &[u8]) -> Result<usize, Fail> {
        let mut at = 0;
        while let Some(prefix) = buf.get(at..at + 5) {
            if prefix[0] != 0 {
                return Err(Fail::new(
                    tonic::Code::Unimplemented,
                    "compressed Pongs are not supported",
                ));
            }
            let len =
                usize::try_from(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]))
                    .unwrap_or(usize::MAX);
            if len > MAX_PONG {
                return Err(Fail::new(tonic::Code::ResourceExhausted, "Pong larger than 1 KiB"));
            }
            let Some(msg) = buf.get(at + 5..at + 5 + len) else { break };
            let pong = Pong::decode(msg)
                .map_err(|_| Fail::new(tonic::Code::InvalidArgument, "malformed Pong"))?;
            self.last_pong = Instant::now();
            let _enter = self.held.span.enter();
            sessions.on_pong(self.client, &pong);
            at += 5 + len;
        }
        Ok(at)
    }
}

/// The client's UUID from the `client-id` metadata.
fn client_id(headers: &http::HeaderMap) -> Result<u128, Fail> {
    let raw = headers
        .get(CLIENT_ID_HEADER)
        .ok_or(Fail::new(tonic::Code::InvalidArgument, "missing `client-id` metadata (a UUID)"))?;
    raw.to_str()
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
        .map(|u| u.as_u128())
        .ok_or(Fail::new(tonic::Code::InvalidArgument, "`client-id` metadata must be a UUID"))
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
