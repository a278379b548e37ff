//! Calls other than `Attach` (reflection, and UNIMPLEMENTED for unknown methods) on the
//! gateway's own HTTP/2 connections: each runs in a task on tonic's router, which takes its
//! request body from the connection and hands its response back as [`Out`] messages. These
//! calls are rare and short, so they may cost a task and two small queues each.
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use super::wire::{self, Reason};

/// Messages queued between a bridged call and its connection, each way.
pub const QUEUE: usize = 16;

/// Response bytes a bridged call may have waiting for flow-control credit before it is reset
/// (a peer that asks and never reads).
const MAX_QUEUED: usize = 1 << 20;

/// A piece of a bridged call's response, for the connection to write.
pub enum Out {
    Head { stream: u32, parts: http::response::Parts, end: bool },
    Data { stream: u32, data: Bytes },
    Trailers { stream: u32, headers: http::HeaderMap },
    End { stream: u32 },
    Reset { stream: u32 },
}

impl Out {
    /// The stream it belongs to.
    pub fn stream(&self) -> u32 {
        match self {
            Self::Head { stream, .. }
            | Self::Data { stream, .. }
            | Self::Trailers { stream, .. }
            | Self::End { stream }
            | Self::Reset { stream } => *stream,
        }
    }
}

/// A bridged call as its connection holds it.
pub struct Bridge {
    id: u32,
    /// The request body's queue to the router; `None` once the client ended its side.
    body: Option<mpsc::Sender<Bytes>>,
    /// Our credit to send on this stream.
    pub send_window: i64,
    /// Response bytes waiting for credit.
    queued: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The end of the response (a trailer block; empty: an empty END_STREAM DATA frame),
    /// written once `queued` is.
    end: Option<Vec<u8>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    /// Starts the call `req` (request body still to come unless `end_stream`) on `routes`.
    pub fn start(
        id: u32,
        req: http::Request<()>,
        end_stream: bool,
        routes: tonic::service::Routes,
        out: mpsc::Sender<Out>,
        send_window: i64,
    ) -> Self {
        let (body_tx, body_rx) = mpsc::channel(QUEUE);
        let req = req.map(|()| RequestBody(body_rx));
        let task = tokio::spawn(run(id, req, routes, out));
        Self {
            id,
            body: (!end_stream).then_some(body_tx),
            send_window,
            queued: VecDeque::new(),
            queued_bytes: 0,
            end: None,
            task: task.abort_handle(),
        }
    }

    /// Request body bytes from the client. False: the router does not keep up (reset it).
    pub fn request_data(&mut self, data: Bytes, end_stream: bool) -> bool {
        if let Some(tx) = &self.body
            && !data.is_empty()
            && tx.try_send(data).is_err()
        {
            return false;
        }
        if end_stream {
            self.body = None;
        }
        true
    }

    /// Writes or queues a piece of the response. True: the call is over.
    pub fn respond(&mut self, piece: Out, buf: &mut Vec<u8>, conn_window: &mut i64) -> bool {
        match piece {
            Out::Head { parts, end, .. } => {
                let mut block = Vec::with_capacity(64);
                wire::hpack_status(&mut block, parts.status.as_u16());
                for (name, value) in &parts.headers {
                    wire::hpack_literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
                }
                wire::put_headers(buf, self.id, &block, end);
                return end;
            }
            Out::Data { data, .. } => {
                if data.is_empty() {
                    return false;
                }
                self.queued_bytes += data.len();
                if self.queued_bytes > MAX_QUEUED {
                    wire::put_reset(buf, self.id, Reason::EnhanceYourCalm);
                    return true;
                }
                self.queued.push_back(data);
            }
            Out::Trailers { headers, .. } => {
                let mut block = Vec::with_capacity(64);
                for (name, value) in &headers {
                    wire::hpack_literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
                }
                self.end = Some(block);
            }
            Out::End { .. } => self.end = Some(Vec::new()),
            Out::Reset { .. } => {
                wire::put_reset(buf, self.id, Reason::Internal);
                return true;
            }
        }
        self.flush(buf, conn_window)
    }

    /// Writes as much of the queued response as the windows allow. True: the call is over.
    pub fn flush(&mut self, buf: &mut Vec<u8>, conn_window: &mut i64) -> bool {
        while let Some(front) = self.queued.front_mut() {
            let room = self.send_window.min(*conn_window).min(wire::MAX_FRAME as i64);
            let Ok(room) = usize::try_from(room) else { return false };
            if room == 0 {
                return false;
            }
            let chunk = front.split_to(room.min(front.len()));
            wire::put_data(buf, self.id, &chunk, false);
            let n = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            self.send_window -= n;
            *conn_window -= n;
            self.queued_bytes -= chunk.len();
            if front.is_empty() {
                self.queued.pop_front();
            }
        }
        match self.end.take() {
            Some(end) if end.is_empty() => wire::put_data(buf, self.id, &[], true),
            Some(end) => wire::put_headers(buf, self.id, &end, true),
            None => return false,
        }
        true
    }
}

async fn run(
    id: u32,
    req: http::Request<RequestBody>,
    routes: tonic::service::Routes,
    out: mpsc::Sender<Out>,
) {
    let Ok(response) = routes.oneshot(req).await;
    let (parts, mut body) = response.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    if out.send(Out::Head { stream: id, parts, end }).await.is_err() || end {
        return;
    }
    loop {
        let piece = match body.frame().await {
            None => Out::End { stream: id },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Out::Data { stream: id, data },
                Err(frame) => match frame.into_trailers() {
                    Ok(headers) => Out::Trailers { stream: id, headers },
                    Err(_) => continue,
                },
            },
            Some(Err(status)) => {
                tracing::debug!(%status, "bridged call failed");
                Out::Reset { stream: id }
            }
        };
        let last = !matches!(piece, Out::Data { .. });
        if out.send(piece).await.is_err() || last {
            return;
        }
    }
}

/// A bridged call's request body: the DATA the connection passes on.
struct RequestBody(mpsc::Receiver<Bytes>);

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
