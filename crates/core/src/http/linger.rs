//! Lingering close, as nginx does it: a server that answers before reading a whole request
//! body (a 413 for an oversized upload) and then closes its socket with unread bytes makes
//! the kernel send a TCP reset, which can destroy the answer in the client's receive buffer
//! before the client reads it: the client sees "connection reset" instead of the 413.
//!
//! [`Reclaim`] wraps the connection's stream for hyper and hands it back when hyper drops it;
//! [`linger`] then sends FIN and reads and discards what the client still sends, until it
//! closes, pauses for [`QUIET`] or [`MAX`] has passed, and only then closes the socket.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::oneshot;

/// A client that sends nothing for this long after our FIN is taken to have stopped. Long
/// enough for a client on a loaded machine to be descheduled mid-upload (200 ms was not).
pub(super) const QUIET: Duration = Duration::from_secs(1);
/// The longest a closed connection is drained (and holds its descriptor and its connection
/// permit): short, because a slow-drip client that the header timeout closed is drained
/// too, and long enough for an upload of the largest body we accept over loopback or LAN.
pub(super) const MAX: Duration = Duration::from_secs(3);

/// A stream that goes back through `back` when dropped (by hyper, or by an upgraded
/// connection that took it over).
pub(super) struct Reclaim<S> {
    io: Option<S>,
    back: Option<oneshot::Sender<S>>,
}

impl<S> Reclaim<S> {
    /// `io`, and the receiver it returns to.
    pub(super) fn new(io: S) -> (Self, oneshot::Receiver<S>) {
        let (back, rx) = oneshot::channel();
        (Self { io: Some(io), back: Some(back) }, rx)
    }

    fn io(&mut self) -> &mut S {
        self.io.as_mut().expect("the stream is only taken on drop")
    }
}

impl<S> Drop for Reclaim<S> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Reclaim<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Reclaim<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_shutdown(cx)
    }
}

/// Closes `io` gracefully: FIN first, then whatever the client still sends is read and
/// discarded (see the module docs for the bounds).
pub(super) async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    if tokio::time::timeout(QUIET, io.shutdown()).await.is_err() {
        return;
    }
    let end = tokio::time::Instant::now() + MAX;
    // On the heap, and only now: an array here would sit in every connection task's state
    // for the connection's whole life.
    let mut sink = vec![0u8; 2048];
    loop {
        let pause = (tokio::time::Instant::now() + QUIET).min(end);
        match tokio::time::timeout_at(pause, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
