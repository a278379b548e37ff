//! The reference the gateway is measured against in the same run: a plain tonic bidi-stream
//! server as one would first write it — default HTTP/2 settings, a task and a
//! `tokio::time::interval` per stream. Same binary, same allocator, same machine, same clients.
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use switchboard_core::Ctx;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use crate::Result;
use crate::proto::gateway_server::{Gateway, GatewayServer};
use crate::proto::{Ping, Pong};

/// Serves the plain gateway on `addr` until `ctx.shutdown`.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, ctx: Ctx) -> Result<()> {
    let (listener, _) = switchboard_core::admin::bind(addr).await?;
    ctx.health.set_ready("presence-reference", true);
    tonic::transport::Server::builder()
        .add_service(GatewayServer::new(Plain))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            ctx.shutdown.clone().cancelled_owned(),
        )
        .await?;
    Ok(())
}

struct Plain;

type PingStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Ping, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for Plain {
    type AttachStream = PingStream;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<Pong>>,
    ) -> Result<tonic::Response<PingStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            metrics::gauge!("presence_gateway_sessions").increment(1.0);
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => if tx.send(Ok(Ping {})).await.is_err() { break },
                    msg = inbound.message() => match msg {
                        Ok(Some(_pong)) => {}
                        _ => break,
                    },
                }
            }
            metrics::gauge!("presence_gateway_sessions").decrement(1.0);
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
