//! Hostile agents against a real console (in-process, real gRPC on loopback): wrong or
//! missing token, no hello, bad or duplicate names, oversized messages, reply floods. Each is
//! refused with a clear status, and a real agent still attaches afterwards.
use std::time::Duration;

use clap::Parser;
use switchboard_control::proto::control_client::ControlClient;
use switchboard_control::proto::{AgentMessage, Hello, Reply, agent_message};
use switchboard_core::Ctx;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const TOKEN: &str = "a-long-enough-test-token";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: switchboard_control::Command,
}

fn spawn_role(argv: &[&str], ctx: &Ctx) {
    let cmd = Cli::parse_from(std::iter::once("control").chain(argv.iter().copied())).cmd;
    let ctx = ctx.clone();
    tokio::spawn(async move { switchboard_control::run(cmd, ctx).await });
}

fn hello(name: &str) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Hello(Hello { name: name.into(), ..Default::default() })),
    }
}

fn reply_msg(id: u64) -> AgentMessage {
    AgentMessage { kind: Some(agent_message::Kind::Reply(Reply { id, ..Default::default() })) }
}

/// Opens an Attach stream with `token` and the given first messages; returns the status or
/// the open stream plus its sender.
async fn attach(
    url: &str,
    token: Option<&str>,
    first: Vec<AgentMessage>,
) -> Result<
    (tonic::Streaming<switchboard_control::proto::Command>, mpsc::Sender<AgentMessage>),
    tonic::Status,
> {
    let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut client = ControlClient::new(channel);
    let (tx, rx) = mpsc::channel(8192);
    for m in first {
        tx.send(m).await.unwrap();
    }
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let stream = client.attach(req).await?.into_inner();
    Ok((stream, tx))
}

async fn connectable(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Channel::from_shared(url.to_owned()).unwrap().connect().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "console never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hostile_agents_are_refused_and_the_console_keeps_serving() {
    let port = switchboard_testkit::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let ctx = Ctx::new();
    let server = [
        "server",
        "--listen",
        &listen,
        "--token",
        TOKEN,
        "--exec",
        "agents",
        "--stay",
        "--reply-rate",
        "50",
    ];
    spawn_role(&server, &ctx);
    connectable(&url).await;

    let status = |r: Result<_, tonic::Status>| match r {
        Ok(_) => panic!("attach must be refused"),
        Err(s) => s,
    };
    let s = status(attach(&url, Some("wrong-token"), vec![hello("x")]).await);
    assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "missing or wrong token"));
    let s = status(attach(&url, None, vec![hello("x")]).await);
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = status(attach(&url, Some(TOKEN), vec![reply_msg(1)]).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("first message must be Hello"), "{}", s.message());
    let s = status(attach(&url, Some(TOKEN), vec![hello("../../etc/passwd")]).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("agent name"), "{}", s.message());
    let s = status(attach(&url, Some(TOKEN), vec![hello(&"n".repeat(100_000))]).await);
    assert_ne!(s.code(), Code::Ok, "oversized hello refused: {s:?}");

    // Duplicate names are refused while the first holder is attached.
    let (_held, _held_tx) = attach(&url, Some(TOKEN), vec![hello("twin")]).await.unwrap();
    let s = status(attach(&url, Some(TOKEN), vec![hello("twin")]).await);
    assert_eq!(s.code(), Code::AlreadyExists);

    // A reply flood gets the flooder disconnected.
    let (mut flood, tx) = attach(&url, Some(TOKEN), vec![hello("flooder")]).await.unwrap();
    for id in 0..2_000 {
        if tx.send(reply_msg(id)).await.is_err() {
            break;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = flood.message().await {}
    });
    ended.await.expect("the console closes a flooding agent's stream");

    // After all that, a real agent attaches and becomes ready.
    spawn_role(&["agent", "--server", &url, "--token", TOKEN, "--name", "good"], &ctx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ctx.health.is_ready() || ctx.health.report()["components"]["control-agent-good"] != true
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", ctx.health.report());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn idle_unauthenticated_connections_are_capped() {
    use tokio::io::AsyncReadExt as _;
    let listen = format!("127.0.0.1:{}", switchboard_testkit::free_port());
    let url = format!("http://{listen}");
    let ctx = Ctx::new();
    let argv = ["server", "--listen", &listen, "--token", TOKEN, "--stay", "--max-agents", "1"];
    spawn_role(&argv, &ctx);
    connectable(&url).await;
    // --max-agents 1 allows 1 + 64 spare connections; these idle ones never authenticate.
    let mut held = Vec::new();
    for _ in 0..65 {
        held.push(tokio::net::TcpStream::connect(&listen).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection over the cap is closed");
    // Freed slots are reusable: a real attach succeeds once the idle peers leave.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while attach(&url, Some(TOKEN), vec![hello("late")]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "attach never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.shutdown.cancel();
}
