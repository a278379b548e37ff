//! A front end that serves the requests it knows on a connection before hyper does, with
//! less memory per connection than hyper's buffers cost (the jobproxy's held requests: a
//! socket, a token and a waiter, held for seconds by thousands of clients).
//!
//! The front reads from the connection itself; at the first request it does not serve, it
//! hands the connection to the router (hyper and axum) together with the bytes it read and
//! did not serve, which hyper then reads first ([`Rewind`]). The router keeps the connection
//! from then on, so anything unusual (chunked bodies, `Expect`, HTTP/2, upgrades, malformed
//! heads) gets hyper's behaviour.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::Limits;

/// A connection's stream, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What a [`Front`] did with a connection.
pub enum Served {
    /// It is finished with the connection (the client closed it or asked to, a timeout, an
    /// I/O error); the server closes it with a lingering close.
    Closed(Box<dyn Io>),
    /// The rest of the connection is the router's, starting with these bytes the front read
    /// but did not serve.
    Handoff(Box<dyn Io>, Vec<u8>),
}

/// Serves some requests of each connection ahead of the router.
pub trait Front: Send + Sync + 'static {
    /// Serves requests on `io` until one it leaves to the router or the connection ends.
    /// A request head must arrive within `limits.header_timeout` of the connection's start or
    /// of the previous response. Once `stop` is cancelled no new request is read: the
    /// connection closes after the response in progress.
    fn serve(
        &self,
        io: Box<dyn Io>,
        limits: Limits,
        stop: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Served> + Send + '_>>;
}

/// A stream that yields `read` before what the connection delivers next.
pub(super) struct Rewind {
    read: Vec<u8>,
    at: usize,
    io: Box<dyn Io>,
}

impl Rewind {
    pub(super) fn new(io: Box<dyn Io>, read: Vec<u8>) -> Self {
        Self { read, at: 0, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn rewind_yields_the_front_bytes_then_the_stream() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut r = Rewind::new(Box::new(far), b"abc".to_vec());
        near.write_all(b"def").await.unwrap();
        drop(near);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }
}
