//! The gateway's HTTP/2 connection against a raw peer: the protocol rules of RFC 9113 a client
//! (or an attacker) can test, frame by frame, over an in-memory pipe to the real connection.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::conn::{self, ATTACH_PATH};
use super::session::{SessionMetrics, Sessions};
use super::ticker::Ticker;
use super::wire::{self, Head, Reason, flag, kind};
use crate::report::Report;

const CLIENT: &str = "7f0a1c52-9a39-4a8e-9d3c-4f0b6d1e2a11";

struct Peer {
    io: DuplexStream,
    reports: mpsc::Receiver<Report>,
    encoder: loona_hpack::Encoder<'static>,
}

/// A connection to a fresh gateway connection; the client preface and SETTINGS already sent
/// (unless `preface` is false), the server's SETTINGS read and acknowledged.
async fn connect(preface: bool) -> Peer {
    let (reports_tx, reports) = mpsc::channel(16);
    let ticker = Arc::new(Ticker::new(Duration::from_secs(1), 10));
    let server = Arc::new(conn::Server {
        sessions: Sessions {
            reports: reports_tx,
            clock: Arc::new(switchboard_core::SystemClock),
            timeout: Duration::from_secs(5),
            slots: Arc::new(Semaphore::new(10)),
            auth: None,
            shutdown: CancellationToken::new(),
            metrics: Arc::new(SessionMetrics::new()),
        },
        routes: tonic::service::Routes::new(crate::proto::reflection().unwrap()).prepare(),
        ticker,
        max_streams: 26,
        stream_window: 4096,
        connection_window: 1 << 20,
        idle_timeout: Duration::from_secs(10),
        shutdown: CancellationToken::new(),
        closed_idle: metrics::counter!("test_closed_idle"),
        protocol_errors: metrics::counter!("test_protocol_errors"),
    });
    let (client, server_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(conn::serve(server_io, server, 1));
    let mut peer = Peer { io: client, reports, encoder: loona_hpack::Encoder::new() };
    if preface {
        peer.send_raw(wire::PREFACE).await;
        let mut settings = Vec::new();
        wire::put_settings(&mut settings, &[]);
        peer.send_raw(&settings).await;
        let (head, _) = peer.frame().await.expect("server SETTINGS");
        assert_eq!((head.kind, head.flags), (kind::SETTINGS, 0), "the server speaks first");
        let mut ack = Vec::new();
        wire::put_head(&mut ack, 0, kind::SETTINGS, flag::ACK, 0);
        peer.send_raw(&ack).await;
    }
    peer
}

impl Peer {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, len_kind_flags_stream: (usize, u8, u8, u32), payload: &[u8]) {
        let (len, k, f, s) = len_kind_flags_stream;
        let mut b = Vec::new();
        wire::put_head(&mut b, len, k, f, s);
        b.extend_from_slice(payload);
        self.send_raw(&b).await;
    }

    /// The next frame, skipping WINDOW_UPDATEs and SETTINGS ACKs; `None` once closed.
    async fn frame(&mut self) -> Option<(Head, Vec<u8>)> {
        loop {
            let mut h = [0u8; wire::HEAD_LEN];
            let read = tokio::time::timeout(Duration::from_secs(5), self.io.read_exact(&mut h))
                .await
                .expect("a frame or the end within 5 s");
            if read.is_err() {
                return None;
            }
            let head = Head::parse(&h);
            let mut payload = vec![0; head.len];
            self.io.read_exact(&mut payload).await.unwrap();
            let noise = head.kind == kind::WINDOW_UPDATE
                || (head.kind == kind::SETTINGS && head.has(flag::ACK));
            if !noise {
                return Some((head, payload));
            }
        }
    }

    /// Reads until GOAWAY and the end of the connection; the GOAWAY's reason.
    async fn goaway(&mut self) -> u32 {
        loop {
            let (head, payload) = self.frame().await.expect("GOAWAY before the end");
            if head.kind == kind::GOAWAY {
                assert!(self.frame().await.is_none(), "the connection closes after GOAWAY");
                return u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            }
        }
    }

    fn block(&mut self, path: &str, content_type: &str) -> Vec<u8> {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"gateway"),
            (b":path", path.as_bytes()),
            (b"content-type", content_type.as_bytes()),
            (b"te", b"trailers"),
            (b"client-id", CLIENT.as_bytes()),
        ];
        self.encoder.encode(headers)
    }
}

fn has(headers: &[(String, String)], name: &str, value: &str) -> bool {
    headers.iter().any(|(n, v)| n == name && v == value)
}

#[tokio::test]
async fn a_wrong_preface_is_refused_with_protocol_error() {
    let mut p = connect(false).await;
    p.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, _) = p.frame().await.unwrap();
    assert_eq!(head.kind, kind::SETTINGS, "SETTINGS are written before the preface is read");
    assert_eq!(p.goaway().await, Reason::Protocol as u32);
}

#[tokio::test]
async fn ping_is_acknowledged_with_its_payload_and_unknown_frames_are_ignored() {
    let mut p = connect(true).await;
    p.send((3, 0xfa, 0, 0), b"xyz").await;
    p.send((8, kind::PING, 0, 0), b"12345678").await;
    let (head, payload) = p.frame().await.unwrap();
    assert_eq!(
        (head.kind, head.flags, payload.as_slice()),
        (kind::PING, flag::ACK, &b"12345678"[..])
    );
}

#[tokio::test]
async fn connection_errors_end_with_goaway_and_the_right_code() {
    // (what is sent, the GOAWAY code it must get)
    let cases: Vec<(Vec<u8>, Reason)> = vec![
        (frame(4, kind::DATA, 0, 0, b"abcd"), Reason::Protocol),
        (
            frame(wire::MAX_FRAME + 1, kind::DATA, 0, 1, &vec![0; wire::MAX_FRAME + 1]),
            Reason::FrameSize,
        ),
        (frame(4, kind::HEADERS, flag::END_HEADERS, 2, b"\x82\x84\x86\x87"), Reason::Protocol),
        (frame(7, kind::PING, 0, 0, b"1234567"), Reason::FrameSize),
        (frame(4, kind::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()), Reason::FlowControl),
        (frame(4, kind::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()), Reason::Protocol),
        (frame(4, kind::DATA, 0, 9, b"abcd"), Reason::Protocol),
        (frame(1, kind::HEADERS, flag::END_HEADERS, 1, b"\xff"), Reason::Compression),
        (
            [frame(1, kind::HEADERS, 0, 1, b"\x82"), frame(8, kind::PING, 0, 0, b"12345678")]
                .concat(),
            Reason::Protocol,
        ),
        (frame(4, kind::PUSH_PROMISE, flag::END_HEADERS, 1, b"\0\0\0\x02"), Reason::Protocol),
        (frame(5, kind::SETTINGS, 0, 0, b"\0\x04\0\0\0"), Reason::FrameSize),
    ];
    for (i, (bytes, reason)) in cases.into_iter().enumerate() {
        let mut p = connect(true).await;
        p.send_raw(&bytes).await;
        assert_eq!(p.goaway().await, reason as u32, "case {i}");
    }
}

fn frame(len: usize, k: u8, f: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    // The head says `len`, which a test may set beyond what the protocol allows.
    let l = u32::try_from(len).unwrap().to_be_bytes();
    b.extend_from_slice(&[l[1], l[2], l[3], k, f]);
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

#[tokio::test]
async fn attach_over_continuation_and_padding_pings_reads_split_pongs_and_ends_ok() {
    let mut p = connect(true).await;
    let block = p.block(ATTACH_PATH, "application/grpc");
    let (a, b) = block.split_at(block.len() / 2);
    // HEADERS padded by 3 and with a priority, the rest of the block in a CONTINUATION.
    let mut first = vec![3u8];
    first.extend_from_slice(&[0, 0, 0, 0, 16]);
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]);
    p.send((first.len(), kind::HEADERS, flag::PADDED | flag::PRIORITY, 1), &first).await;
    p.send((b.len(), kind::CONTINUATION, flag::END_HEADERS, 1), b).await;
    let (head, block) = p.frame().await.unwrap();
    assert_eq!((head.kind, head.stream), (kind::HEADERS, 1));
    let headers = wire::decode(&block);
    assert!(has(&headers, ":status", "200") && has(&headers, "content-type", "application/grpc"));
    let (head, ping) = p.frame().await.unwrap();
    assert_eq!(
        (head.kind, head.stream, ping),
        (kind::DATA, 1, vec![0; 5]),
        "the first Ping at once"
    );

    // A Pong (status EVEN = field 1, value 1) split across two DATA frames, the second padded.
    let pong = [0u8, 0, 0, 0, 2, 0x08, 0x01];
    p.send((3, kind::DATA, 0, 1), &pong[..3]).await;
    let mut rest = vec![2u8];
    rest.extend_from_slice(&pong[3..]);
    rest.extend_from_slice(&[0, 0]);
    p.send((rest.len(), kind::DATA, flag::PADDED, 1), &rest).await;
    let report =
        tokio::time::timeout(Duration::from_secs(5), p.reports.recv()).await.unwrap().unwrap();
    assert_eq!(report.client, uuid::Uuid::parse_str(CLIENT).unwrap().as_u128());

    p.send((0, kind::DATA, flag::END_STREAM, 1), &[]).await;
    let (head, trailers) = loop {
        let (head, payload) = p.frame().await.unwrap();
        if head.kind == kind::HEADERS {
            break (head, payload);
        }
    };
    assert!(head.has(flag::END_STREAM));
    assert!(has(&wire::decode(&trailers), "grpc-status", "0"), "half-close ends OK");
}

#[tokio::test]
async fn a_non_grpc_request_gets_415_and_an_unknown_method_unimplemented() {
    let mut p = connect(true).await;
    let block = p.block(ATTACH_PATH, "text/plain");
    p.send((block.len(), kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1), &block).await;
    let (head, block) = p.frame().await.unwrap();
    assert_eq!((head.kind, head.stream), (kind::HEADERS, 1));
    assert!(has(&wire::decode(&block), ":status", "415"));

    // Bridged to tonic's router: a trailers-only UNIMPLEMENTED.
    let block = p.block("/no.Such/Method", "application/grpc");
    p.send((block.len(), kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3), &block).await;
    let (head, block) = p.frame().await.unwrap();
    assert_eq!((head.kind, head.stream), (kind::HEADERS, 3));
    assert!(head.has(flag::END_STREAM));
    let headers = wire::decode(&block);
    assert!(has(&headers, "grpc-status", "12"), "{headers:?}");
}

#[tokio::test]
async fn a_closed_stream_window_holds_pings_and_a_reset_stream_frees_its_slot() {
    let mut p = connect(true).await;
    // No credit per stream: the Ping on attach is skipped, not queued.
    p.send((6, kind::SETTINGS, 0, 0), b"\0\x04\0\0\0\0").await;
    let block = p.block(ATTACH_PATH, "application/grpc");
    p.send((block.len(), kind::HEADERS, flag::END_HEADERS, 1), &block).await;
    let (head, _) = p.frame().await.unwrap();
    assert_eq!(head.kind, kind::HEADERS);
    p.send((8, kind::PING, 0, 0), b"probe---").await;
    let (head, _) = p.frame().await.unwrap();
    assert_eq!(head.kind, kind::PING, "no DATA before the PING ACK: the window is closed");
    p.send((4, kind::RST_STREAM, 0, 1), &8u32.to_be_bytes()).await;
    // The same client on a new stream gets a slot again (10 slots, but it proves the reset
    // stream is gone: DATA on it is now refused with RST_STREAM STREAM_CLOSED).
    p.send((1, kind::DATA, 0, 1), b"x").await;
    let (head, payload) = p.frame().await.unwrap();
    assert_eq!((head.kind, head.stream), (kind::RST_STREAM, 1));
    assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), Reason::StreamClosed as u32);
}
