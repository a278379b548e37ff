//! The console's TCP listener with a cap on open connections.
//!
//! `--max-agents` is enforced after the token check, so without this cap unauthenticated
//! peers could hold any number of idle HTTP/2 connections (and file descriptors). Each
//! accepted connection holds a permit for its lifetime; when none is free, the connection
//! is closed at once, counted and logged.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connections beyond `--max-agents` allowed for peers still authenticating or refused.
pub(crate) const SPARE_CONNECTIONS: usize = 64;

/// An accepted connection holding one of the listener's permits.
pub(crate) struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Accepted connections, at most `max` open at once; the rest are closed on accept.
pub(crate) fn incoming(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = io::Result<Limited>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max));
    TcpListenerStream::new(listener).filter_map(move |conn| {
        let permit = Arc::clone(&permits).try_acquire_owned();
        async move {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            match permit {
                Ok(p) => {
                    // Commands are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    Some(Ok(Limited { stream, _permit: p }))
                }
                Err(_) => {
                    metrics::counter!("control_server_shed_total", "queue" => "connections")
                        .increment(1);
                    tracing::warn!(peer = ?stream.peer_addr().ok(), max, "too many connections: closed");
                    None
                }
            }
        }
    })
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
