//! Gateway → bus → status in one process on the memory bus and a SQLite file: real gRPC
//! sockets on 127.0.0.1:0, real clients, the status window judged by an injected clock.
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_core::{Clock, Ctx, ManualClock, SystemClock};
use switchboard_presence::{ClientsArgs, GatewayArgs, StatusArgs, fetch_online};
use switchboard_store::Store;

/// Polls the status service until it reports `want`, or fails after `within`.
async fn wait_for_count(url: &str, want: u64, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = u64::MAX;
    while tokio::time::Instant::now() < deadline {
        if let Ok(n) = fetch_online(url).await {
            last = n;
            if n == want {
                return n;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status at {url} reported {last}, expected {want} within {within:?}");
}

struct Setup {
    _dir: tempfile::TempDir,
    bus: Bus,
    store: Store,
    gateway_url: String,
}

async fn setup(gateway_ctx: &Ctx) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("presence.db").display());
    let store = Store::connect(&store_url).await.unwrap();
    let bus = Bus::memory();
    let gw = switchboard_presence::start_gateway(
        GatewayArgs::loopback(),
        bus.clone(),
        gateway_ctx.clone(),
    )
    .await
    .unwrap();
    Setup { _dir: dir, bus, store, gateway_url: format!("http://{}", gw.addr) }
}

impl Setup {
    /// Starts status replica `status-0` on the shared bus and store; returns its URL.
    async fn status(&self, clock: Arc<dyn Clock>, ctx: &Ctx) -> String {
        self.replica("status-0", clock, ctx).await
    }

    /// Starts status replica `id` on the shared bus and store; returns its URL.
    async fn replica(&self, id: &str, clock: Arc<dyn Clock>, ctx: &Ctx) -> String {
        let mut args = StatusArgs::loopback();
        args.replica_id = id.to_owned();
        let addr = switchboard_presence::start_status(
            &args,
            self.bus.clone(),
            self.store.clone(),
            clock,
            ctx.clone(),
        )
        .await
        .unwrap();
        format!("http://{addr}")
    }
}

fn clients(n: usize, gateway: &str) -> ClientsArgs {
    ClientsArgs::new(n, vec![gateway.to_owned()])
}

#[tokio::test]
async fn users_count_while_online_and_leave_three_minutes_after_their_last_report() {
    let gateway_ctx = Ctx::new();
    let s = setup(&gateway_ctx).await;
    let clock = ManualClock::new(SystemClock.now_ms());
    let status_ctx = Ctx::new();
    let status_url = s.status(Arc::new(clock.clone()), &status_ctx).await;

    let clients_ctx = Ctx::new();
    switchboard_presence::spawn_clients(&clients(20, &s.gateway_url), None, &clients_ctx).unwrap();
    // The manual clock follows real time while clients report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        clock.set(SystemClock.now_ms());
        if fetch_online(&status_url).await.unwrap() == 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "20 clients never all counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clients_ctx.drain(Duration::from_secs(5)).await);
    // Let the last batch reach the status service before freezing time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_report = SystemClock.now_ms();

    clock.set(last_report + 170_000);
    assert_eq!(fetch_online(&status_url).await.unwrap(), 20, "still inside the window");
    clock.set(last_report + 182_000);
    assert_eq!(fetch_online(&status_url).await.unwrap(), 0, "3 minutes after the last report");

    assert!(status_ctx.drain(Duration::from_secs(5)).await);
    assert!(gateway_ctx.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_restarted_status_replica_answers_the_same_count() {
    let gateway_ctx = Ctx::new();
    let s = setup(&gateway_ctx).await;
    let first = Ctx::new();
    let url = s.status(Arc::new(SystemClock), &first).await;
    let clients_ctx = Ctx::new();
    switchboard_presence::spawn_clients(&clients(30, &s.gateway_url), None, &clients_ctx).unwrap();
    wait_for_count(&url, 30, Duration::from_secs(20)).await;

    assert!(first.drain(Duration::from_secs(5)).await, "status drained");
    let second = Ctx::new();
    let url = s.status(Arc::new(SystemClock), &second).await;
    // Answered from the snapshot at once, before any new report could have arrived.
    assert_eq!(fetch_online(&url).await.unwrap(), 30);
    // And the clients keep it there.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(fetch_online(&url).await.unwrap(), 30);

    assert!(clients_ctx.drain(Duration::from_secs(5)).await);
    assert!(second.drain(Duration::from_secs(5)).await);
    assert!(gateway_ctx.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn unknown_and_bad_input_is_refused_without_counting() {
    use switchboard_presence::proto::{Pong, Status, gateway_client::GatewayClient};
    let gateway_ctx = Ctx::new();
    let s = setup(&gateway_ctx).await;
    let status_ctx = Ctx::new();
    let status_url = s.status(Arc::new(SystemClock), &status_ctx).await;

    let mut client = GatewayClient::connect(s.gateway_url.clone()).await.unwrap();
    // No client id: a clear INVALID_ARGUMENT, not a crash.
    let err = client.attach(tokio_stream::iter(Vec::<Pong>::new())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut req = tonic::Request::new(tokio_stream::iter(Vec::<Pong>::new()));
    req.metadata_mut().insert("client-id", "not-a-uuid".parse().unwrap());
    assert_eq!(client.attach(req).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // A client answering UNKNOWN (and an undefined status) is connected but not online.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("client-id", uuid::Uuid::new_v4().to_string().parse().unwrap());
    let mut pings = client.attach(req).await.unwrap().into_inner();
    pings.message().await.unwrap().expect("first ping");
    tx.send(Pong { status: Status::Unknown.into() }).await.unwrap();
    tx.send(Pong { status: 42 }).await.unwrap();
    pings.message().await.unwrap().expect("second ping: the stream survived bad input");
    // A real client next to it is counted; the UNKNOWN one never is.
    let clients_ctx = Ctx::new();
    switchboard_presence::spawn_clients(&clients(1, &s.gateway_url), None, &clients_ctx).unwrap();
    wait_for_count(&status_url, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(fetch_online(&status_url).await.unwrap(), 1);

    drop(tx);
    assert!(clients_ctx.drain(Duration::from_secs(5)).await);
    assert!(status_ctx.drain(Duration::from_secs(5)).await);
    assert!(gateway_ctx.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn clients_of_a_drained_gateway_move_to_the_other_without_double_counting() {
    let (ctx1, ctx2, status_ctx) = (Ctx::new(), Ctx::new(), Ctx::new());
    let s = setup(&ctx1).await;
    let gw2 =
        switchboard_presence::start_gateway(GatewayArgs::loopback(), s.bus.clone(), ctx2.clone())
            .await
            .unwrap();
    let status_url = s.status(Arc::new(SystemClock), &status_ctx).await;
    let mut args = clients(30, &s.gateway_url);
    args.target.gateways.push(format!("http://{}", gw2.addr));
    args.target.max_backoff = Duration::from_millis(300);
    let clients_ctx = Ctx::new();
    switchboard_presence::spawn_clients(&args, None, &clients_ctx).unwrap();
    wait_for_count(&status_url, 30, Duration::from_secs(20)).await;
    assert!(gw2.sessions() > 0 && gw2.sessions() < 30, "clients start on both gateways");

    assert!(ctx1.drain(Duration::from_secs(5)).await, "gateway 1 drained");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gw2.sessions() < 30 {
        assert!(tokio::time::Instant::now() < deadline, "only {} clients moved", gw2.sessions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(fetch_online(&status_url).await.unwrap(), 30, "each user counted once");

    assert!(clients_ctx.drain(Duration::from_secs(5)).await);
    assert!(status_ctx.drain(Duration::from_secs(5)).await);
    assert!(ctx2.drain(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_new_replica_rebuilds_the_window_from_the_stream_alone() {
    let (gateway_ctx, first, second) = (Ctx::new(), Ctx::new(), Ctx::new());
    let s = setup(&gateway_ctx).await;
    let url = s.replica("a", Arc::new(SystemClock), &first).await;
    let clients_ctx = Ctx::new();
    switchboard_presence::spawn_clients(&clients(12, &s.gateway_url), None, &clients_ctx).unwrap();
    wait_for_count(&url, 12, Duration::from_secs(20)).await;
    // Nobody reports any more: a replica that has never run (no snapshot) can only learn the 12
    // users by reading the last 3 minutes of the stream.
    assert!(clients_ctx.drain(Duration::from_secs(5)).await);
    assert!(gateway_ctx.drain(Duration::from_secs(5)).await, "last batch flushed");
    let url_b = s.replica("b", Arc::new(SystemClock), &second).await;
    wait_for_count(&url_b, 12, Duration::from_secs(10)).await;
    assert_eq!(fetch_online(&url).await.unwrap(), 12, "replicas agree");

    assert!(first.drain(Duration::from_secs(5)).await);
    assert!(second.drain(Duration::from_secs(5)).await);
}

/// Service names a gRPC server lists through reflection (what `grpcurl list` prints), asked
/// under the `v1` name or, as older tools do, the `v1alpha` one.
macro_rules! reflected_services {
    ($version:ident, $url:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Endpoint::from_shared($url.to_owned()).unwrap();
        let mut client = ServerReflectionClient::new(channel.connect().await.unwrap());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        match answers.message().await.unwrap().and_then(|r| r.message_response) {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

#[tokio::test]
async fn gateway_and_status_serve_reflection() {
    let (gateway_ctx, status_ctx) = (Ctx::new(), Ctx::new());
    let s = setup(&gateway_ctx).await;
    let status_url = s.status(Arc::new(SystemClock), &status_ctx).await;
    for url in [&s.gateway_url, &status_url] {
        for services in [reflected_services!(v1, url), reflected_services!(v1alpha, url)] {
            assert!(services.iter().any(|n| n == "tenten.interview.Gateway"), "{services:?}");
            assert!(services.iter().any(|n| n == "tenten.interview.StatusReader"), "{services:?}");
        }
    }
    assert!(status_ctx.drain(Duration::from_secs(5)).await);
    assert!(gateway_ctx.drain(Duration::from_secs(5)).await);
}
