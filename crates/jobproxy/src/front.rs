//! The lean front end for held requests. A `wait:true` start holds its client's connection
//! for a whole job; served by hyper, each held connection keeps hyper's read and write
//! buffers (~16 KiB) and its connection state alive for that time. This front reads the
//! request from a small buffer, frees the buffer while the job runs (keeping only bytes a
//! client pipelined behind its request) and writes the answer itself, so a held request costs
//! its socket, its task and its waiter entry (docs/jobproxy.md has the breakdown).
//!
//! It serves only the plain case: `POST /` or `/start`, HTTP/1.1, a `Content-Length` body
//! within `--max-body` that is a valid `wait:true` request. At the first other request
//! (callbacks, passthroughs, chunked bodies, `Expect`, HTTP/1.0 or 2, bad JSON, oversized
//! bodies) the connection goes to the router with every byte read so far, so those keep
//! exactly the behaviour and the errors they have without the front.
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::response::{IntoResponse as _, Response};
use switchboard_core::http::{Front, Io, Limits, Served};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job::StartRequest;
use crate::proxy::{Proxy, observed};

/// Request heads longer than this go to the router (whose own limit is larger).
const MAX_HEAD: usize = 8 * 1024;
/// Bytes read at a time while a request arrives.
const READ_CHUNK: usize = 1024;
/// Headers looked at in one head; more go to the router.
const MAX_HEADERS: usize = 32;

/// Serves held requests ahead of the proxy's router.
pub(crate) struct HeldFront {
    pub proxy: Arc<Proxy>,
}

impl Front for HeldFront {
    fn serve(
        &self,
        io: Box<dyn Io>,
        limits: Limits,
        stop: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Served> + Send + '_>> {
        Box::pin(serve(&self.proxy, io, limits, stop))
    }
}

async fn serve(
    proxy: &Proxy,
    mut io: Box<dyn Io>,
    limits: Limits,
    stop: CancellationToken,
) -> Served {
    // Bytes read and not yet served; empty (no allocation) while a request is held, unless
    // the client pipelined more behind it.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The whole request, head and body, must arrive within the header timeout of the
        // connection's start or of the previous answer.
        let deadline = Instant::now() + limits.header_timeout;
        let head = loop {
            match parse(&buf, proxy.max_body) {
                Parsed::Lean(head) => break head,
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Served::Handoff(io, buf),
            }
            tokio::select! {
                more = read_by(deadline, &mut io, &mut buf) => if !more {
                    return Served::Closed(io);
                },
                () = stop.cancelled(), if buf.is_empty() => return Served::Closed(io),
            }
        };
        let end = head.len + head.content_length;
        while buf.len() < end {
            if !read_by(deadline, &mut io, &mut buf).await {
                return Served::Closed(io);
            }
        }
        let request = match StartRequest::parse(&buf[head.len..end]) {
            Ok(request) if request.wait => request,
            // Passthroughs and the 400s are the router's.
            _ => return Served::Handoff(io, buf),
        };
        buf.drain(..end);
        if buf.is_empty() {
            buf = Vec::new();
        }
        let Some(response) = hold(proxy, request, &mut io, &mut buf).await else {
            return Served::Closed(io);
        };
        let close = head.close || stop.is_cancelled();
        // Boxed: the write's state exists only while it writes.
        let write = Box::pin(answer(&mut io, response, close));
        if write.await.is_err() || close {
            return Served::Closed(io);
        }
    }
}

/// Reads what arrives into `buf`, growing it by a small step; `false` when nothing came by
/// `deadline`, the client closed, or the read failed (the connection is then closed).
async fn read_by(deadline: Instant, io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> bool {
    buf.reserve(READ_CHUNK);
    let read = tokio::time::timeout_at(deadline, io.read_buf(buf)).await;
    matches!(read, Ok(Ok(n)) if n > 0)
}

/// Runs the held request while watching the connection: a client that closes it ends the
/// request (`None`), as hyper would; bytes it pipelines meanwhile are kept for later.
async fn hold(
    proxy: &Proxy,
    request: StartRequest,
    io: &mut Box<dyn Io>,
    buf: &mut Vec<u8>,
) -> Option<Response> {
    // Made in place: a future moved into a pinned slot after it was made would keep two
    // copies of its space in this one's state.
    let mut job = std::pin::pin!(observed(proxy.held_job(request)));
    let mut probe = [0u8; 128];
    loop {
        tokio::select! {
            result = job.as_mut() => return Some(result.unwrap_or_else(|f| f.into_response())),
            read = io.read(&mut probe), if buf.len() < MAX_HEAD => match read {
                Ok(n) if n > 0 => buf.extend_from_slice(&probe[..n]),
                // Dropping `job` ends the hold and counts the client as gone.
                _ => return None,
            },
        }
    }
}

/// Writes `response` as one HTTP/1.1 message.
async fn answer(io: &mut Box<dyn Io>, response: Response, close: bool) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(160 + body.len());
    let status = parts.status;
    write!(out, "HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""))?;
    for (name, value) in &parts.headers {
        if name != CONTENT_LENGTH && name != CONNECTION {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    write!(out, "content-length: {}\r\ndate: {date}\r\n", body.len())?;
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    io.write_all(&out).await?;
    io.flush().await
}

/// A request head the front serves.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    content_length: usize,
    /// The client asked to close after this answer.
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Lean(Head),
    /// Not a whole head yet.
    Partial,
    /// Any request the router serves instead, or bytes that are no request at all.
    Other,
}

fn parse(buf: &[u8], max_body: usize) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.method != Some("POST")
        || !matches!(req.path, Some("/" | "/start"))
        || req.version != Some(1)
    {
        return Parsed::Other;
    }
    let (mut content_length, mut close) = (None, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = h.value.trim_ascii();
            let n =
                std::str::from_utf8(digits).ok().filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
            match (content_length, n.and_then(|d| d.parse::<usize>().ok())) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::Other;
        }
    }
    match content_length {
        Some(content_length) if content_length <= max_body => {
            Parsed::Lean(Head { len, content_length, close })
        }
        _ => Parsed::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_536;

    #[test]
    fn plain_starts_are_served_and_everything_else_is_left_to_the_router() {
        let head = b"POST /start HTTP/1.1\r\nHost: p\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(
            parse(head, MAX),
            Parsed::Lean(Head { len: head.len(), content_length: 7, close: false })
        );
        let close =
            b"POST / HTTP/1.1\r\ncontent-length: 0\r\nConnection: keep-alive, Close\r\n\r\n";
        assert!(matches!(parse(close, MAX), Parsed::Lean(Head { close: true, .. })));
        assert_eq!(parse(&head[..20], MAX), Parsed::Partial);
        assert_eq!(parse(b"", MAX), Parsed::Partial);
        for other in [
            &b"POST /callback/abc HTTP/1.1\r\ncontent-length: 7\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.0\r\ncontent-length: 7\r\n\r\n",
            b"POST /?x HTTP/1.1\r\ncontent-length: 7\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 7\r\nexpect: 100-continue\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 7\r\ncontent-length: 7\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: +7\r\n\r\n",
            b"POST / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 65537\r\n\r\n",
            b"POST / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\ncontent-length: 1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01 not http",
        ] {
            assert_eq!(parse(other, MAX), Parsed::Other, "{}", String::from_utf8_lossy(other));
        }
    }
}
