//! How a gateway session ends, on real gRPC sockets: the session is the stream the server
//! polls, so each way a client can leave must still free its `--max-clients` slot.
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::Ctx;
use switchboard_presence::proto::{Pong, Status, gateway_client::GatewayClient};
use switchboard_presence::{GatewayArgs, RunningGateway};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn gateway(ctx: &Ctx, client_timeout: Duration) -> RunningGateway {
    let mut args = GatewayArgs::loopback();
    args.client_timeout = client_timeout;
    switchboard_presence::start_gateway(args, Bus::memory(), ctx.clone()).await.unwrap()
}

/// Attaches as a fresh client and receives its first Ping, which comes at once; returns the
/// Pong sender and the Ping stream.
async fn attach(
    gw: &RunningGateway,
) -> (mpsc::Sender<Pong>, tonic::Streaming<switchboard_presence::proto::Ping>) {
    let mut client = GatewayClient::connect(format!("http://{}", gw.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("client-id", uuid::Uuid::new_v4().to_string().parse().unwrap());
    let mut pings = client.attach(req).await.unwrap().into_inner();
    pings.message().await.unwrap().expect("the first Ping comes at once");
    (tx, pings)
}

/// Reads Pings until the stream ends: `Ok` for an OK end, else the final status.
async fn end_of(
    pings: &mut tonic::Streaming<switchboard_presence::proto::Ping>,
) -> Result<(), tonic::Status> {
    while pings.message().await?.is_some() {}
    Ok(())
}

/// Waits until the gateway holds `want` sessions, failing after 10 s.
async fn sessions_become(gw: &RunningGateway, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.sessions() != want {
        assert!(tokio::time::Instant::now() < deadline, "{} sessions, want {want}", gw.sessions());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_with_deadline_exceeded_and_frees_its_slot() {
    let ctx = Ctx::new();
    let gw = gateway(&ctx, Duration::from_secs(1)).await;
    let (_tx, mut pings) = attach(&gw).await;
    assert_eq!(gw.sessions(), 1);
    let end = end_of(&mut pings).await.expect_err("a silent client must get DEADLINE_EXCEEDED");
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
    sessions_become(&gw, 0).await;
    assert!(ctx.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_slot() {
    let ctx = Ctx::new();
    let gw = gateway(&ctx, Duration::from_secs(60)).await;
    // Reset mid-stream: the server drops the session without polling it again.
    let (tx, pings) = attach(&gw).await;
    sessions_become(&gw, 1).await;
    drop((tx, pings));
    sessions_become(&gw, 0).await;
    // Half-close: the client ends its Pongs; the session ends and the stream ends OK.
    let (tx, mut pings) = attach(&gw).await;
    drop(tx);
    end_of(&mut pings).await.expect("a half-closed client gets an OK end");
    sessions_become(&gw, 0).await;
    assert!(ctx.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_client_slow_to_read_its_pings_stays_while_it_answers() {
    let ctx = Ctx::new();
    let gw = gateway(&ctx, Duration::from_secs(1)).await;
    let (tx, mut pings) = attach(&gw).await;
    // Pongs keep coming while the Pings go unread for three client timeouts.
    for _ in 0..15 {
        tx.send(Pong { status: Status::Even.into() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.sessions(), 1, "an answering client is not timed out");
    pings.message().await.unwrap().expect("its Pings were kept coming");
    // Draining ends it with UNAVAILABLE, so it reconnects elsewhere.
    ctx.begin_shutdown();
    let end = end_of(&mut pings).await.expect_err("a drained client must be told UNAVAILABLE");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    drop(tx);
    assert!(ctx.drain(Duration::from_secs(5)).await);
}
