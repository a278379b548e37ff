//! HTTP/2 frames (RFC 9113) and the HPACK we write (RFC 7541), as far as the gateway's own
//! transport needs them: parsing frame heads, and writing the few frames a server sends.
//!
//! Headers we send are literals without indexing (HPACK §6.2.2): no encoder state per
//! connection, and every peer decodes them. Headers we receive go through a full decoder
//! (`loona-hpack`), because clients do index.

/// What every client connection starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame head.
pub const HEAD_LEN: usize = 9;
/// The largest frame payload we accept and send: the protocol's default, never raised, so a
/// read buffer of this size always holds a whole frame.
pub const MAX_FRAME: usize = 16_384;
/// The window every stream and connection starts with before SETTINGS say otherwise.
pub const DEFAULT_WINDOW: i64 = 65_535;
/// The largest flow-control window the protocol allows.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers we read or send.
pub mod setting {
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes of RST_STREAM and GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    Refused = 0x7,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A parsed frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Parses the 9 bytes of a frame head.
    pub fn parse(b: &[u8]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Appends a frame head.
pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_FRAME);
    let l = u32::try_from(len).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends a SETTINGS frame carrying `values`.
pub fn put_settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    put_head(out, values.len() * 6, kind::SETTINGS, 0, 0);
    for (id, v) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a WINDOW_UPDATE of `stream` (0: the connection).
pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

/// Appends a RST_STREAM.
pub fn put_reset(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

/// Appends a GOAWAY naming the last stream we processed.
pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    put_head(out, 8, kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

/// Appends the ACK of a PING.
pub fn put_ping_ack(out: &mut Vec<u8>, payload: &[u8]) {
    put_head(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(payload);
}

/// Appends one DATA frame (`data` fits one frame).
pub fn put_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    put_head(out, data.len(), kind::DATA, if end_stream { flag::END_STREAM } else { 0 }, stream);
    out.extend_from_slice(data);
}

/// Appends a header block as HEADERS and, when it is larger than a frame, CONTINUATIONs.
pub fn put_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        put_head(out, 0, kind::HEADERS, flags, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let mut flags = if chunks.peek().is_none() { flag::END_HEADERS } else { 0 };
        let kind = if first { kind::HEADERS } else { kind::CONTINUATION };
        if first && end_stream {
            flags |= flag::END_STREAM;
        }
        put_head(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
        first = false;
    }
}

/// HPACK integer with an `n`-bit prefix whose other bits are `first` (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, mut value: usize, n: u32, first: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap_or(0));
        return;
    }
    out.push(first | u8::try_from(max).unwrap_or(0));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap_or(0) | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// A header as a literal without indexing, with a literal name (RFC 7541 §6.2.2).
pub fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_int(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    hpack_int(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// `:status 200` (static table index 8) and `content-type: application/grpc` (a literal with
/// the static table's name 31): the response head of every gRPC call.
pub const GRPC_RESPONSE_HEAD: &[u8] = b"\x88\x0f\x10\x10application/grpc";

/// `:status <code>` for a status the static table does not hold.
pub fn hpack_status(out: &mut Vec<u8>, code: u16) {
    if code == 200 {
        out.push(0x88);
    } else {
        // Literal without indexing, name from static index 8 (`:status`).
        out.push(0x08);
        let digits = code.to_string();
        hpack_int(out, digits.len(), 7, 0);
        out.extend_from_slice(digits.as_bytes());
    }
}

/// The trailers that end a gRPC call: `grpc-status` and, when not empty, `grpc-message`
/// percent-encoded as the gRPC spec asks.
pub fn grpc_trailers(out: &mut Vec<u8>, code: tonic::Code, message: &str) {
    hpack_literal(out, b"grpc-status", (code as i32).to_string().as_bytes());
    if !message.is_empty() {
        let mut encoded = Vec::with_capacity(message.len());
        for &b in message.as_bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                encoded.push(b);
            } else {
                encoded.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        hpack_literal(out, b"grpc-message", &encoded);
    }
}

/// A header block as (name, value) text pairs, decoded by a fresh decoder (tests).
#[cfg(test)]
pub fn decode(block: &[u8]) -> Vec<(String, String)> {
    let mut d = loona_hpack::Decoder::new();
    d.decode(block)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_we_encode_a_decoder_reads_back() {
        let mut block = GRPC_RESPONSE_HEAD.to_vec();
        grpc_trailers(&mut block, tonic::Code::Unavailable, "draining 100%; é");
        hpack_literal(&mut block, b"x-long", "v".repeat(300).as_bytes());
        let h = decode(&block);
        assert_eq!(h[0], (":status".into(), "200".into()));
        assert_eq!(h[1], ("content-type".into(), "application/grpc".into()));
        assert_eq!(h[2], ("grpc-status".into(), "14".into()));
        assert_eq!(h[3], ("grpc-message".into(), "draining 100%25; %C3%A9".into()));
        assert_eq!(h[4].1.len(), 300, "a length past the 7-bit prefix");
        let mut s = Vec::new();
        hpack_status(&mut s, 415);
        assert_eq!(decode(&s), [(":status".into(), "415".into())]);
    }

    #[test]
    fn frame_heads_round_trip_and_big_blocks_split() {
        let mut out = Vec::new();
        put_head(&mut out, 16_384, kind::DATA, flag::END_STREAM, 0x7fff_ffff);
        assert_eq!(
            Head::parse(&out),
            Head { len: 16_384, kind: kind::DATA, flags: 1, stream: 0x7fff_ffff }
        );
        let mut out = Vec::new();
        put_headers(&mut out, 3, &vec![0u8; MAX_FRAME + 10], true);
        let first = Head::parse(&out);
        assert_eq!(
            (first.kind, first.flags, first.len),
            (kind::HEADERS, flag::END_STREAM, MAX_FRAME)
        );
        let second = Head::parse(&out[HEAD_LEN + MAX_FRAME..]);
        assert_eq!(
            (second.kind, second.flags, second.len),
            (kind::CONTINUATION, flag::END_HEADERS, 10)
        );
    }
}
