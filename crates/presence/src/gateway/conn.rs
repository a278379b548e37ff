//! The gateway's own HTTP/2 server connection (RFC 9113), made for many idle streams.
//!
//! A general HTTP/2 stack keeps a write buffer, a read buffer and an encoder table per
//! connection whether or not anything is in flight (h2: 16 KiB + 8 KiB + 4 KiB), and a task,
//! channels and codec buffers per call. Here a connection holds, between Pings, its socket, its
//! HPACK decoder table and one small record per stream:
//! * reads go into one buffer per worker thread, borrowed only while a read is decoded; the
//!   tail of a frame split across reads is the only thing kept;
//! * writes are appended to `out`, which is released once flushed if it grew;
//! * the connection's Pings go out on one tick of the shared [`Ticker`](super::ticker::Ticker):
//!   one wake-up and one write per connection per interval, however many streams it carries.
//!
//! `Attach` calls are served here ([`super::session`]); every other call (reflection) is
//! handed to tonic's router through [`super::bridge`], so the server stays a gRPC server.
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bridge::{self, Bridge, Out};
use super::session::{End, Fail, Session, Sessions};
use super::ticker::Ticker;
use super::wire::{self, Head, Reason, flag, kind, setting};

/// The one method served natively.
pub const ATTACH_PATH: &str = "/tenten.interview.Gateway/Attach";

/// A Ping as one DATA frame's payload: the gRPC message prefix (uncompressed, length 0) of the
/// empty `Ping` message.
const PING_MESSAGE: [u8; 5] = [0; 5];

/// First Pings a connection sends at once on attach between two ticks. h2-based peers (tonic
/// clients, proxies) count small DATA frames they hold unread and close the connection past a
/// budget (~2,000 for a 1 MiB window): thousands of streams opened in one burst must not all
/// get their first Ping in the same write.
const MAX_FIRST_PINGS: u32 = 32;

/// Largest header block (all HEADERS and CONTINUATION of one call) accepted, and what SETTINGS
/// announce; gRPC clients send a few hundred bytes.
const MAX_HEADER_BLOCK: usize = 16 * 1024;

/// Unsent output beyond which the connection stops reading and skips Pings: its peer is not
/// reading, and queuing more for it only costs memory.
const MAX_BACKLOG: usize = 256 * 1024;

/// An output buffer larger than this is freed once flushed instead of kept for the next write.
const KEEP_OUT: usize = 4 * 1024;

thread_local! {
    /// The read buffer of every connection on this worker thread: one frame and its head.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; wire::HEAD_LEN + wire::MAX_FRAME]);
}

/// What all connections of a gateway share.
pub struct Server {
    pub sessions: Sessions,
    /// tonic's router for every call but `Attach`.
    pub routes: tonic::service::Routes,
    pub ticker: Arc<Ticker>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// Our receive window per stream, bytes.
    pub stream_window: u32,
    /// Our receive window of a whole connection, bytes.
    pub connection_window: u32,
    /// A connection without a call for this long is closed.
    pub idle_timeout: Duration,
    pub shutdown: CancellationToken,
    pub closed_idle: metrics::Counter,
    pub protocol_errors: metrics::Counter,
}

impl Server {
    /// Our receive window of a connection: never below the protocol's initial one.
    fn connection_window(&self) -> i64 {
        i64::from(self.connection_window).max(wire::DEFAULT_WINDOW)
    }
}

/// A stream the connection holds.
enum Stream {
    Attach(Attach),
    Bridge(Box<Bridge>),
}

/// An `Attach` call: the session and its flow-control windows.
struct Attach {
    /// Its ticker slot.
    slot: usize,
    session: Session,
    send_window: i64,
    recv_window: i64,
}

/// A header block being received in HEADERS + CONTINUATION frames.
struct Continuation {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// Why [`Conn::poll_io`] returned.
enum Flow {
    Done,
    Changed,
}

/// A connection error: what GOAWAY says, and why (for the log).
struct ConnError(Reason, &'static str);

/// Serves one connection until the peer closes it, it fails, it idles out or the gateway drains.
pub async fn serve<IO>(io: IO, server: Arc<Server>, seq: u64)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut c = Conn::new(io, server.clone(), seq);
    let mut slot = c.wanted_slot(server.ticker.fired());
    let mut tick = server.ticker.subscribe_slot(slot);
    let mut bridged: Option<mpsc::Receiver<Out>> = None;
    // Allocated on drain only: a timer inline would cost every connection's task its size.
    let mut drain: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let result = loop {
        tokio::select! {
            biased;
            () = server.shutdown.cancelled(), if drain.is_none() => {
                c.drain();
                drain = Some(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
            }
            changed = tick.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                if let Err(e) = c.on_tick() {
                    break Err(e);
                }
            }
            Some(out) = recv(&mut bridged) => c.on_bridge(out),
            r = poll_fn(|cx| c.poll_io(cx)) => match r {
                Ok(Flow::Done) => break Ok(()),
                Ok(Flow::Changed) => {}
                Err(e) => break Err(e),
            },
            () = async { if let Some(d) = drain.as_mut() { d.await } }, if drain.is_some() => break Ok(()),
        }
        if bridged.is_none() {
            bridged = c.bridge_rx.take();
        }
        // Wait on the next slot that holds one of our streams. A slot that fires between
        // choosing it and subscribing would be waited for a whole interval: when anything
        // fired meanwhile, catch up (ping what is due) and choose again.
        let resubscribed = loop {
            let fired = server.ticker.fired();
            let want = c.wanted_slot(fired);
            if want != slot {
                slot = want;
                tick = server.ticker.subscribe_slot(slot);
            }
            if server.ticker.fired() == fired {
                break Ok(());
            }
            if let Err(e) = c.on_tick() {
                break Err(e);
            }
        };
        if let Err(e) = resubscribed {
            break Err(e);
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "gateway connection ended");
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<Out>>) -> Option<Out> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Conn<IO> {
    io: IO,
    server: Arc<Server>,
    hpack: loona_hpack::Decoder<'static>,
    /// Frames to write; `out[written..]` is still unsent.
    out: Vec<u8>,
    written: usize,
    need_flush: bool,
    /// The start of a frame split across reads.
    partial: Vec<u8>,
    preface_seen: bool,
    streams: HashMap<u32, Stream>,
    /// The `Attach` streams by ticker slot: which are due when a slot fires.
    schedule: BTreeSet<(usize, u32)>,
    /// Ticker fires handled so far.
    cursor: u64,
    /// The slot waited on while the connection has no `Attach` stream (idle checks).
    home_slot: usize,
    /// Set when the ticker slot to wait on or the bridge queue may have changed.
    changed: bool,
    /// First Pings sent on attach since the last tick.
    first_pings: u32,
    /// Highest stream id the peer opened.
    last_stream: u32,
    continuation: Option<Box<Continuation>>,
    /// Our credit to send on the connection, and the peer's initial credit per stream.
    send_window: i64,
    peer_stream_window: i64,
    /// The peer's credit to send to us on the connection.
    recv_window: i64,
    /// Since when unsent output has waited for the socket.
    stalled_since: Option<Instant>,
    /// Since when the connection has had no stream.
    idle_since: Instant,
    /// GOAWAY sent: close once every stream has ended and the output is flushed.
    closing: bool,
    /// The peer closed its side: close once the output is flushed.
    eof: bool,
    bridge_tx: Option<mpsc::Sender<Out>>,
    bridge_rx: Option<mpsc::Receiver<Out>>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn new(io: IO, server: Arc<Server>, seq: u64) -> Self {
        let mut out = Vec::with_capacity(64);
        wire::put_settings(
            &mut out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, server.max_streams),
                (setting::INITIAL_WINDOW_SIZE, server.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, u32::try_from(MAX_HEADER_BLOCK).unwrap_or(0)),
            ],
        );
        let connection_window = server.connection_window();
        let raise = connection_window - wire::DEFAULT_WINDOW;
        if raise > 0 {
            wire::put_window_update(&mut out, 0, u32::try_from(raise).unwrap_or(0));
        }
        let cursor = server.ticker.fired();
        let home_slot = usize::try_from(seq % server.ticker.slots() as u64).unwrap_or(0);
        Self {
            io,
            server,
            hpack: loona_hpack::Decoder::new(),
            out,
            written: 0,
            need_flush: false,
            partial: Vec::new(),
            preface_seen: false,
            streams: HashMap::new(),
            schedule: BTreeSet::new(),
            cursor,
            home_slot,
            first_pings: 0,
            changed: false,
            last_stream: 0,
            continuation: None,
            send_window: wire::DEFAULT_WINDOW,
            peer_stream_window: wire::DEFAULT_WINDOW,
            recv_window: connection_window,
            stalled_since: None,
            idle_since: Instant::now(),
            closing: false,
            eof: false,
            bridge_tx: None,
            bridge_rx: None,
        }
    }

    /// Writes what is queued and reads what has arrived, until neither can go on. Ready when
    /// the connection is done, or when what it waits on changed (a stream in another ticker
    /// slot, the first bridged call's queue).
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Flow>> {
        loop {
            while self.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.stalled_since.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            if self.written == self.out.len() && self.written > 0 {
                self.stalled_since = None;
                self.written = 0;
                if self.out.capacity() > KEEP_OUT {
                    self.out = Vec::new();
                } else {
                    self.out.clear();
                }
            }
            if self.need_flush {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.need_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let flushed = self.out.is_empty() && !self.need_flush;
            if flushed && (self.eof || (self.closing && self.streams.is_empty())) {
                return Poll::Ready(Ok(Flow::Done));
            }
            if std::mem::take(&mut self.changed) {
                return Poll::Ready(Ok(Flow::Changed));
            }
            if self.eof || self.out.len() - self.written > MAX_BACKLOG {
                // Nothing more to read, or the peer does not read what we write: wait for the
                // socket to take the output (its waker is registered above).
                return Poll::Pending;
            }
            let read = READ_BUF.with_borrow_mut(|buf| {
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(false)),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if let Err(ConnError(reason, why)) = self.on_bytes(&buf[..n]) {
                            self.fail(reason, why);
                        }
                        Poll::Ready(Ok(true))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => self.eof = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A connection error: GOAWAY, then close once it is written.
    fn fail(&mut self, reason: Reason, why: &'static str) {
        self.server.protocol_errors.increment(1);
        tracing::debug!(?reason, why, "HTTP/2 connection error");
        wire::put_goaway(&mut self.out, self.last_stream, reason);
        self.streams.clear();
        self.schedule.clear();
        self.closing = true;
        self.eof = true;
    }

    fn on_bytes(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if self.closing && self.eof {
            return Ok(());
        }
        if self.partial.is_empty() {
            let used = self.frames(data)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.frames(&buf)?;
            buf.drain(..used);
            self.partial = if buf.is_empty() { Vec::new() } else { buf };
        }
        Ok(())
    }

    /// Handles the preface and whole frames at the start of `buf`; returns the bytes taken.
    fn frames(&mut self, buf: &[u8]) -> Result<usize, ConnError> {
        let mut at = 0;
        if !self.preface_seen {
            let n = wire::PREFACE.len().min(buf.len());
            if buf[..n] != wire::PREFACE[..n] {
                return Err(ConnError(Reason::Protocol, "not an HTTP/2 client preface"));
            }
            if n < wire::PREFACE.len() {
                return Ok(0);
            }
            self.preface_seen = true;
            at = n;
        }
        while let Some(head) = buf.get(at..at + wire::HEAD_LEN) {
            let head = Head::parse(head);
            if head.len > wire::MAX_FRAME {
                return Err(ConnError(Reason::FrameSize, "frame larger than SETTINGS allow"));
            }
            let start = at + wire::HEAD_LEN;
            let Some(payload) = buf.get(start..start + head.len) else { break };
            self.frame(head, payload)?;
            at = start + head.len;
            if self.closing && self.eof {
                break;
            }
        }
        Ok(at)
    }

    fn frame(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if self.continuation.is_some() && head.kind != kind::CONTINUATION {
            return Err(ConnError(Reason::Protocol, "frame between HEADERS and CONTINUATION"));
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => {
                if head.stream == 0 {
                    return Err(ConnError(Reason::Protocol, "PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    wire::put_reset(&mut self.out, head.stream, Reason::FrameSize);
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if head.stream == 0 {
                    return Err(ConnError(Reason::Protocol, "RST_STREAM on stream 0"));
                }
                if payload.len() != 4 {
                    return Err(ConnError(Reason::FrameSize, "RST_STREAM of a wrong size"));
                }
                if head.stream > self.last_stream {
                    return Err(ConnError(Reason::Protocol, "RST_STREAM of an idle stream"));
                }
                self.remove(head.stream);
                Ok(())
            }
            kind::SETTINGS => self.on_settings(head, payload),
            kind::PUSH_PROMISE => Err(ConnError(Reason::Protocol, "PUSH_PROMISE from a client")),
            kind::PING => {
                if head.stream != 0 {
                    return Err(ConnError(Reason::Protocol, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(ConnError(Reason::FrameSize, "PING of a wrong size"));
                }
                if !head.has(flag::ACK) {
                    wire::put_ping_ack(&mut self.out, payload);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(ConnError(Reason::Protocol, "GOAWAY on a stream"));
                }
                // The peer opens no more streams; the open ones run to their end.
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(ConnError(Reason::Protocol, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(ConnError(Reason::FrameSize, "SETTINGS ACK with a payload"))
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnError(Reason::FrameSize, "SETTINGS of a wrong size"));
        }
        let mut window_changed = false;
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > wire::MAX_WINDOW {
                        return Err(ConnError(
                            Reason::FlowControl,
                            "INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value - self.peer_stream_window;
                    self.peer_stream_window = value;
                    window_changed = true;
                    for s in self.streams.values_mut() {
                        match s {
                            Stream::Attach(a) => a.send_window += delta,
                            Stream::Bridge(b) => b.send_window += delta,
                        }
                    }
                }
                setting::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&value) => {
                    return Err(ConnError(Reason::Protocol, "MAX_FRAME_SIZE out of range"));
                }
                // We never send frames larger than the default, push, or use the peer's
                // HPACK table, so the other settings need nothing from us.
                _ => {}
            }
        }
        wire::put_head(&mut self.out, 0, kind::SETTINGS, flag::ACK, 0);
        if window_changed {
            // Queued bridged data may fit now.
            self.flush_bridges();
        }
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(Reason::FrameSize, "WINDOW_UPDATE of a wrong size"));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if increment == 0 {
                return Err(ConnError(Reason::Protocol, "WINDOW_UPDATE of 0"));
            }
            self.send_window += increment;
            if self.send_window > wire::MAX_WINDOW {
                return Err(ConnError(Reason::FlowControl, "connection window overflow"));
            }
            self.flush_bridges();
            return Ok(());
        }
        let overflow = match self.streams.get_mut(&head.stream) {
            None => return Ok(()),
            Some(_) if increment == 0 => Some(Reason::Protocol),
            Some(Stream::Attach(a)) => {
                a.send_window += increment;
                (a.send_window > wire::MAX_WINDOW).then_some(Reason::FlowControl)
            }
            Some(Stream::Bridge(b)) => {
                b.send_window += increment;
                (b.send_window > wire::MAX_WINDOW).then_some(Reason::FlowControl)
            }
        };
        match overflow {
            Some(reason) => self.reset(head.stream, reason),
            None => self.flush_bridge(head.stream),
        }
        Ok(())
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(Reason::Protocol, "DATA on stream 0"));
        }
        let data = unpad(head, payload)?;
        // Flow control counts the whole frame, padding included.
        let len = i64::try_from(payload.len()).unwrap_or(i64::MAX);
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(ConnError(Reason::FlowControl, "DATA beyond the connection window"));
        }
        let connection_window = self.server.connection_window();
        if self.recv_window < connection_window / 2 {
            let credit = connection_window - self.recv_window;
            wire::put_window_update(&mut self.out, 0, u32::try_from(credit).unwrap_or(0));
            self.recv_window = connection_window;
        }
        let end_stream = head.has(flag::END_STREAM);
        let stream_window = i64::from(self.server.stream_window);
        match self.streams.get_mut(&head.stream) {
            None => {
                if head.stream > self.last_stream {
                    return Err(ConnError(Reason::Protocol, "DATA on an idle stream"));
                }
                wire::put_reset(&mut self.out, head.stream, Reason::StreamClosed);
            }
            Some(Stream::Attach(a)) => {
                a.recv_window -= len;
                if a.recv_window < 0 {
                    self.reset(head.stream, Reason::FlowControl);
                    return Ok(());
                }
                if let Err(fail) = a.session.on_data(&self.server.sessions, data) {
                    self.finish(head.stream, End::StreamError, Some(fail));
                    return Ok(());
                }
                if end_stream {
                    self.finish(head.stream, End::ClientClosed, None);
                } else if a.recv_window < stream_window / 2 {
                    let credit = stream_window - a.recv_window;
                    wire::put_window_update(
                        &mut self.out,
                        head.stream,
                        u32::try_from(credit).unwrap_or(0),
                    );
                    a.recv_window = stream_window;
                }
            }
            Some(Stream::Bridge(b)) => {
                if !b.request_data(Bytes::copy_from_slice(data), end_stream) {
                    self.reset(head.stream, Reason::EnhanceYourCalm);
                } else if !end_stream && len > 0 {
                    // The router reads the body at its own pace; the queue in front of it is
                    // what bounds a bridged call, not the window.
                    wire::put_window_update(
                        &mut self.out,
                        head.stream,
                        u32::try_from(len).unwrap_or(0),
                    );
                }
            }
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 || head.stream.is_multiple_of(2) {
            return Err(ConnError(Reason::Protocol, "HEADERS on stream 0 or a server stream"));
        }
        let mut block = unpad(head, payload)?;
        if head.has(flag::PRIORITY) {
            block = block
                .get(5..)
                .ok_or(ConnError(Reason::FrameSize, "HEADERS too short for its priority"))?;
        }
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.on_header_block(head.stream, block, end_stream);
        }
        self.continuation =
            Some(Box::new(Continuation { stream: head.stream, end_stream, block: block.to_vec() }));
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Some(mut c) = self.continuation.take() else {
            return Err(ConnError(Reason::Protocol, "CONTINUATION without HEADERS"));
        };
        if c.stream != head.stream {
            return Err(ConnError(Reason::Protocol, "CONTINUATION of another stream"));
        }
        c.block.extend_from_slice(payload);
        if c.block.len() > MAX_HEADER_BLOCK {
            return Err(ConnError(Reason::EnhanceYourCalm, "header block too large"));
        }
        if head.has(flag::END_HEADERS) {
            return self.on_header_block(c.stream, &c.block, c.end_stream);
        }
        self.continuation = Some(c);
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
    ) -> Result<(), ConnError> {
        if block.len() > MAX_HEADER_BLOCK {
            return Err(ConnError(Reason::EnhanceYourCalm, "header block too large"));
        }
        // Every block goes through the decoder, even one we refuse: its table must stay in step
        // with the peer's encoder.
        let mut request = Request::default();
        self.hpack
            .decode_with_cb(block, |name, value| request.add(&name, &value))
            .map_err(|_| ConnError(Reason::Compression, "undecodable header block"))?;
        if id <= self.last_stream {
            // Trailers of an open stream end its request body; anything else is an error.
            return match self.streams.get_mut(&id) {
                Some(_) if !end_stream => {
                    self.reset(id, Reason::Protocol);
                    Ok(())
                }
                Some(Stream::Attach(_)) => {
                    self.finish(id, End::ClientClosed, None);
                    Ok(())
                }
                Some(Stream::Bridge(b)) => {
                    b.request_data(Bytes::new(), true);
                    Ok(())
                }
                None => Err(ConnError(Reason::StreamClosed, "HEADERS on a closed stream")),
            };
        }
        self.last_stream = id;
        if self.closing || self.streams.len() >= self.server.max_streams as usize {
            wire::put_reset(&mut self.out, id, Reason::Refused);
            return Ok(());
        }
        if request.invalid || request.method.as_deref() != Some("POST") {
            wire::put_reset(&mut self.out, id, Reason::Protocol);
            return Ok(());
        }
        let grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            let mut block = Vec::new();
            wire::hpack_status(&mut block, 415);
            wire::put_headers(&mut self.out, id, &block, true);
            return Ok(());
        }
        if request.path.as_deref() == Some(ATTACH_PATH) {
            self.attach(id, request.headers, end_stream);
        } else {
            self.bridge(id, request, end_stream);
        }
        Ok(())
    }

    /// Opens an `Attach` call: the response head at once, and the first Ping too (a client
    /// learns quickly that the stream works) unless [`MAX_FIRST_PINGS`] went out since the
    /// last tick; then it comes on the stream's slot.
    fn attach(&mut self, id: u32, headers: http::HeaderMap, end_stream: bool) {
        let session = match self.server.sessions.open(headers) {
            Ok(s) => s,
            Err(fail) => {
                let mut block = wire::GRPC_RESPONSE_HEAD.to_vec();
                wire::grpc_trailers(&mut block, fail.code, fail.message);
                wire::put_headers(&mut self.out, id, &block, true);
                return;
            }
        };
        wire::put_headers(&mut self.out, id, wire::GRPC_RESPONSE_HEAD, false);
        let slot = self.server.ticker.slot_of(session.client());
        let mut a = Attach {
            slot,
            session,
            send_window: self.peer_stream_window,
            recv_window: i64::from(self.server.stream_window),
        };
        if self.first_pings < MAX_FIRST_PINGS {
            self.first_pings += 1;
            ping(&mut self.out, &mut self.send_window, id, &mut a, &self.server.sessions);
        }
        self.streams.insert(id, Stream::Attach(a));
        self.schedule.insert((slot, id));
        self.changed = true;
        if end_stream {
            self.finish(id, End::ClientClosed, None);
        }
    }

    fn bridge(&mut self, id: u32, request: Request, end_stream: bool) {
        let tx = match &self.bridge_tx {
            Some(tx) => tx.clone(),
            None => {
                // Made on the first bridged call only: most connections never have one.
                let (tx, rx) = mpsc::channel(bridge::QUEUE);
                self.bridge_rx = Some(rx);
                self.changed = true;
                self.bridge_tx = Some(tx.clone());
                tx
            }
        };
        let Some(req) = request.into_http() else {
            wire::put_reset(&mut self.out, id, Reason::Protocol);
            return;
        };
        let b = Bridge::start(
            id,
            req,
            end_stream,
            self.server.routes.clone(),
            tx,
            self.peer_stream_window,
        );
        self.streams.insert(id, Stream::Bridge(Box::new(b)));
    }

    /// One Ping to every `Attach` stream of the connection, after ending those whose client
    /// went silent; the write-stall and idle checks of the connection.
    fn on_tick(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let timeout = self.server.sessions.timeout;
        let fired = self.server.ticker.fired();
        let from = std::mem::replace(&mut self.cursor, fired);
        self.first_pings = 0;
        if self.stalled_since.is_some_and(|t| now.duration_since(t) > timeout) {
            // The peer has taken no bytes for a whole client timeout: a dead peer whose TCP
            // has not noticed yet. Nothing more can be told to it.
            return Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"));
        }
        if self.streams.is_empty() {
            if now.duration_since(self.idle_since) >= self.server.idle_timeout && !self.closing {
                self.server.closed_idle.increment(1);
                wire::put_goaway(&mut self.out, self.last_stream, Reason::NoError);
                self.closing = true;
            }
            return Ok(());
        }
        if fired <= from || self.schedule.is_empty() {
            return Ok(());
        }
        // The slots fired since the last tick: usually one, more when this connection was
        // late or waited on a later slot than a new stream's.
        let n = self.server.ticker.slots();
        let due: Vec<u32> = if fired - from >= n as u64 {
            self.schedule.iter().map(|&(_, id)| id).collect()
        } else {
            let first = usize::try_from(from % n as u64).unwrap_or(0);
            let last = usize::try_from((fired - 1) % n as u64).unwrap_or(0);
            let s = &self.schedule;
            if first <= last {
                s.range((first, 0)..=(last, u32::MAX)).map(|&(_, id)| id).collect()
            } else {
                s.range((first, 0)..)
                    .chain(s.range(..=(last, u32::MAX)))
                    .map(|&(_, id)| id)
                    .collect()
            }
        };
        let backlog = self.out.len() - self.written > MAX_BACKLOG / 2;
        for id in due {
            let Some(Stream::Attach(a)) = self.streams.get_mut(&id) else { continue };
            if a.session.silent(now, timeout) {
                let fail = Fail {
                    code: tonic::Code::DeadlineExceeded,
                    message: "no Pong within the client timeout",
                };
                self.finish(id, End::TimedOut, Some(fail));
            } else if backlog {
                self.server.sessions.metrics.pings_skipped.increment(1);
            } else {
                ping(&mut self.out, &mut self.send_window, id, a, &self.server.sessions);
            }
        }
        Ok(())
    }

    /// The ticker slot to wait on: the next one after `fired` fires that holds one of this
    /// connection's `Attach` streams.
    fn wanted_slot(&self, fired: u64) -> usize {
        let next = usize::try_from(fired % self.server.ticker.slots() as u64).unwrap_or(0);
        self.schedule
            .range((next, 0)..)
            .next()
            .or_else(|| self.schedule.iter().next())
            .map_or(self.home_slot, |&(slot, _)| slot)
    }

    /// The gateway drains: every `Attach` call ends UNAVAILABLE, GOAWAY says no more streams.
    fn drain(&mut self) {
        for id in self.ids(|s| matches!(s, Stream::Attach(_))) {
            let fail =
                Fail { code: tonic::Code::Unavailable, message: "gateway draining; reconnect" };
            self.finish(id, End::Draining, Some(fail));
        }
        wire::put_goaway(&mut self.out, self.last_stream, Reason::NoError);
        self.closing = true;
    }

    /// Ends an `Attach` call with `fail`'s status (OK without one).
    fn finish(&mut self, id: u32, why: End, fail: Option<Fail>) {
        let Some(Stream::Attach(a)) = self.take(id) else { return };
        let mut block = Vec::with_capacity(48);
        match fail {
            Some(f) => wire::grpc_trailers(&mut block, f.code, f.message),
            None => wire::grpc_trailers(&mut block, tonic::Code::Ok, ""),
        }
        wire::put_headers(&mut self.out, id, &block, true);
        a.session.end(why);
    }

    /// Resets a stream (a stream error).
    fn reset(&mut self, id: u32, reason: Reason) {
        wire::put_reset(&mut self.out, id, reason);
        if let Some(Stream::Attach(a)) = self.take(id) {
            a.session.end(End::StreamError);
        }
    }

    /// The peer reset a stream, or it ended.
    fn remove(&mut self, id: u32) {
        // An Attach session ends as ClientClosed; a bridged call's task is aborted on drop.
        self.take(id);
    }

    /// Takes a stream out of the connection.
    fn take(&mut self, id: u32) -> Option<Stream> {
        let stream = self.streams.remove(&id)?;
        if let Stream::Attach(a) = &stream {
            self.schedule.remove(&(a.slot, id));
        }
        if self.streams.is_empty() {
            self.idle_since = Instant::now();
        }
        Some(stream)
    }

    fn on_bridge(&mut self, out: Out) {
        let id = out.stream();
        let Some(Stream::Bridge(b)) = self.streams.get_mut(&id) else { return };
        if b.respond(out, &mut self.out, &mut self.send_window) {
            self.remove(id);
        }
    }

    fn flush_bridge(&mut self, id: u32) {
        let Some(Stream::Bridge(b)) = self.streams.get_mut(&id) else { return };
        if b.flush(&mut self.out, &mut self.send_window) {
            self.remove(id);
        }
    }

    fn flush_bridges(&mut self) {
        if self.bridge_tx.is_none() {
            return;
        }
        for id in self.ids(|s| matches!(s, Stream::Bridge(_))) {
            self.flush_bridge(id);
        }
    }

    /// The ids of the streams `which` picks (taken out first: handling one changes the map).
    fn ids(&self, which: impl Fn(&Stream) -> bool) -> Vec<u32> {
        self.streams.iter().filter(|(_, s)| which(s)).map(|(&id, _)| id).collect()
    }
}

/// Writes one Ping on `a` if both windows allow it; otherwise counts it skipped (the client
/// is not reading: it gets the next one, not a backlog).
fn ping(out: &mut Vec<u8>, conn_window: &mut i64, id: u32, a: &mut Attach, sessions: &Sessions) {
    let len = PING_MESSAGE.len() as i64;
    if a.send_window < len || *conn_window < len {
        sessions.metrics.pings_skipped.increment(1);
        return;
    }
    a.send_window -= len;
    *conn_window -= len;
    wire::put_data(out, id, &PING_MESSAGE, false);
    sessions.metrics.pings.increment(1);
}

/// The payload of a DATA or HEADERS frame without its padding.
fn unpad(head: Head, payload: &[u8]) -> Result<&[u8], ConnError> {
    if !head.has(flag::PADDED) {
        return Ok(payload);
    }
    let pad = usize::from(
        *payload.first().ok_or(ConnError(Reason::FrameSize, "padded frame without a length"))?,
    );
    if pad >= payload.len() {
        return Err(ConnError(Reason::Protocol, "padding longer than the frame"));
    }
    Ok(&payload[1..payload.len() - pad])
}

/// A request's head as decoded.
#[derive(Default)]
pub struct Request {
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub headers: http::HeaderMap,
    /// A header that is not valid HTTP, or a pseudo-header we do not know.
    pub invalid: bool,
}

impl Request {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let text = || String::from_utf8(value.to_vec()).ok();
        let slot = match name {
            b":method" => &mut self.method,
            b":scheme" => &mut self.scheme,
            b":authority" => &mut self.authority,
            b":path" => &mut self.path,
            _ if name.first() == Some(&b':') => {
                self.invalid = true;
                return;
            }
            _ => {
                match (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
                    (Ok(n), Ok(v)) => {
                        self.headers.append(n, v);
                    }
                    _ => self.invalid = true,
                }
                return;
            }
        };
        match text() {
            Some(v) => *slot = Some(v),
            None => self.invalid = true,
        }
    }

    /// The request as the router takes it, with a body fed by the connection.
    fn into_http(self) -> Option<http::Request<()>> {
        let uri = http::Uri::builder()
            .scheme(self.scheme.as_deref().unwrap_or("http"))
            .authority(self.authority.as_deref().unwrap_or("localhost"))
            .path_and_query(self.path?)
            .build()
            .ok()?;
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(uri)
            .version(http::Version::HTTP_2)
            .body(())
            .ok()?;
        *req.headers_mut() = self.headers;
        Some(req)
    }
}
