//! A real agent (in-process, real gRPC on loopback) against a hostile console that sends
//! whatever it likes: every hostile command gets a clear refusal, and the agent keeps serving.
use std::time::Duration;

use clap::Parser;
use switchboard_control::proto::control_server::{Control, ControlServer};
use switchboard_control::proto::{
    AgentMessage, AgentState, Calculate, Command, Hello, Ping, RefusalCode, Reply, Start,
    Terminate, agent_message, command, reply,
};
use switchboard_core::Ctx;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: switchboard_control::Command,
}

/// A console that hands every attached session to the test.
struct Hostile {
    sessions: mpsc::Sender<Session>,
}

struct Session {
    inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<Command, Status>>,
    next_id: u64,
}

#[tonic::async_trait]
impl Control for Hostile {
    type AttachStream = ReceiverStream<Result<Command, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let session = Session { inbound: request.into_inner(), tx, next_id: 1 };
        self.sessions.send(session).await.map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Session {
    async fn hello(&mut self) -> Hello {
        match self.next().await.kind {
            Some(agent_message::Kind::Hello(h)) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    async fn next(&mut self) -> AgentMessage {
        let msg = tokio::time::timeout(WAIT, self.inbound.message()).await;
        msg.expect("agent answers in time").expect("stream ok").expect("stream open")
    }

    async fn next_reply(&mut self) -> Reply {
        match self.next().await.kind {
            Some(agent_message::Kind::Reply(r)) => r,
            other => panic!("expected a Reply, got {other:?}"),
        }
    }

    async fn send(&mut self, op: Option<command::Op>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tx.send(Ok(Command { id, op })).await.expect("agent stream open");
        id
    }

    /// Sends `op` and returns the reply to it.
    async fn call(&mut self, op: Option<command::Op>) -> Reply {
        let id = self.send(op).await;
        let r = self.next_reply().await;
        assert_eq!(r.id, id, "replies come in order for immediate commands");
        r
    }
}

fn calc(x: f64, msg: &str) -> Option<command::Op> {
    Some(command::Op::Calculate(Calculate { x, msg: msg.into() }))
}

fn ping() -> Option<command::Op> {
    Some(command::Op::Ping(Ping {}))
}

fn refusal(r: &Reply) -> (RefusalCode, String) {
    match &r.outcome {
        Some(reply::Outcome::Refused(f)) => (f.code(), f.reason.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn is_pong(r: &Reply) -> bool {
    matches!(r.outcome, Some(reply::Outcome::Pong(_)))
}

/// Starts the hostile console and a real agent dialing it with `extra` flags.
async fn setup(extra: &[&str]) -> (mpsc::Receiver<Session>, Ctx, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sessions_tx, sessions) = mpsc::channel(4);
    let server = tonic::transport::Server::builder()
        .add_service(ControlServer::new(Hostile { sessions: sessions_tx }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);

    let mut argv = vec!["control", "agent", "--server", &url, "--token", "t", "--name", "victim"];
    argv.extend(["--backoff-min", "20ms", "--backoff-max", "100ms"]);
    argv.extend(extra);
    let cmd = Cli::parse_from(argv).cmd;
    let ctx = Ctx::new();
    let agent_ctx = ctx.clone();
    let agent = tokio::spawn(async move {
        switchboard_control::run(cmd, agent_ctx).await.expect("agent ends cleanly");
    });
    (sessions, ctx, agent)
}

async fn next_session(sessions: &mut mpsc::Receiver<Session>) -> Session {
    tokio::time::timeout(WAIT, sessions.recv()).await.expect("agent attaches").unwrap()
}

#[tokio::test]
async fn hostile_commands_are_refused_and_the_agent_keeps_serving() {
    let (mut sessions, ctx, _agent) = setup(&[]).await;
    let mut s = next_session(&mut sessions).await;
    let hello = s.hello().await;
    assert_eq!((hello.name.as_str(), hello.state()), ("victim", AgentState::Unready));

    let (code, reason) = refusal(&s.call(ping()).await);
    assert_eq!(code, RefusalCode::NotReady);
    assert!(reason.contains("start"), "{reason}");
    assert!(matches!(
        s.call(Some(command::Op::Start(Start {}))).await.outcome,
        Some(reply::Outcome::Applied(_))
    ));

    let hostile = [
        (calc(f64::NAN, "x"), RefusalCode::InvalidArgument, "finite"),
        (calc(f64::INFINITY, "x"), RefusalCode::InvalidArgument, "finite"),
        (calc(-1.0, "x"), RefusalCode::InvalidArgument, "within"),
        (calc(1e12, "x"), RefusalCode::InvalidArgument, "within"),
        (calc(0.1, &"m".repeat(2000)), RefusalCode::InvalidArgument, "2000 bytes"),
        (calc(0.1, "\u{1b}]0;pwned\u{7}"), RefusalCode::InvalidArgument, "control character"),
        (None, RefusalCode::UnknownCommand, "unknown command"),
    ];
    for (op, want, text) in hostile {
        let r = s.call(op.clone()).await;
        let (code, reason) = refusal(&r);
        assert_eq!(code, want, "{op:?}: {reason}");
        assert!(reason.contains(text), "{op:?}: {reason}");
        assert_eq!(r.state(), AgentState::Ready, "a refusal never changes state");
    }
    assert!(is_pong(&s.call(ping()).await), "still serving after hostile commands");

    // Around the agent's --max-msg-bytes (1024): limit-1 and limit run, limit+1 is refused,
    // and the session goes on.
    for (len, runs) in [(1023, true), (1024, true), (1025, false)] {
        let r = s.call(calc(0.0, &"m".repeat(len))).await;
        assert_eq!(matches!(r.outcome, Some(reply::Outcome::Accepted(_))), runs, "{len}: {r:?}");
        if runs {
            let done = s.next_reply().await;
            assert!(matches!(done.outcome, Some(reply::Outcome::Finished(_))), "{done:?}");
        }
    }
    // The console's own ceiling fits the wire: refused by the agent's check, not the codec.
    let (code, _) =
        refusal(&s.call(calc(0.0, &"m".repeat(switchboard_control::MAX_MSG_BYTES))).await);
    assert_eq!(code, RefusalCode::InvalidArgument);
    assert!(is_pong(&s.call(ping()).await), "still serving");

    // Only a message no console of ours sends (above the wire cap) ends the session; the agent
    // reconnects and keeps its state.
    s.send(calc(0.1, &"z".repeat(switchboard_control::MAX_WIRE_BYTES + 1))).await;
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.hello().await.state(), AgentState::Ready, "state survives the reconnect");
    assert!(is_pong(&s.call(ping()).await));
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn floods_are_rate_limited_then_service_resumes() {
    let (mut sessions, ctx, _agent) = setup(&["--rate", "5", "--burst", "10"]).await;
    let mut s = next_session(&mut sessions).await;
    s.hello().await;
    s.call(Some(command::Op::Start(Start {}))).await;
    for _ in 0..200 {
        s.send(ping()).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..200 {
        let r = s.next_reply().await;
        if is_pong(&r) {
            pongs += 1;
        } else {
            let (code, reason) = refusal(&r);
            assert_eq!(code, RefusalCode::RateLimited, "{reason}");
            assert!(reason.contains("retry in"), "{reason}");
            limited += 1;
        }
    }
    // Burst of 9 left after `start`, plus what 5/s refills while 200 commands arrive.
    assert!(pongs < 40 && limited > 160, "pongs {pongs}, limited {limited}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "service never resumed");
        if is_pong(&s.call(ping()).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll: the bucket refills at 5/s
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn calculations_never_block_and_terminate_cancels_them() {
    let (mut sessions, ctx, agent) = setup(&["--max-in-flight", "3"]).await;
    let mut s = next_session(&mut sessions).await;
    s.hello().await;
    s.call(Some(command::Op::Start(Start {}))).await;
    for i in 1..=3u32 {
        match s.call(calc(30.0, "long job")).await.outcome {
            Some(reply::Outcome::Accepted(a)) => assert_eq!(a.in_flight, i),
            other => panic!("calculation not accepted: {other:?}"),
        }
        // Other commands are answered at once while calculations run.
        assert!(is_pong(&s.call(ping()).await));
    }
    let (code, reason) = refusal(&s.call(calc(1.0, "one too many")).await);
    assert_eq!(code, RefusalCode::Busy, "{reason}");

    let id = s.send(Some(command::Op::Terminate(Terminate {}))).await;
    let mut cancelled = 0;
    loop {
        let r = s.next_reply().await;
        match r.outcome {
            Some(reply::Outcome::Cancelled(_)) => cancelled += 1,
            Some(reply::Outcome::Applied(_)) if r.id == id => {
                assert_eq!(r.state(), AgentState::Terminated);
                break;
            }
            other => panic!("unexpected reply while terminating: {other:?}"),
        }
    }
    assert_eq!(cancelled, 3, "every running calculation reports its cancellation first");
    drop(s); // the console closes its side; the agent then exits
    tokio::time::timeout(WAIT, agent).await.expect("agent exits after terminate").unwrap();
    assert!(!ctx.shutdown.is_cancelled(), "the agent ended by itself, not by shutdown");
}

/// A console that turns every attach down, counting the attempts.
struct Refusing {
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl Control for Refusing {
    type AttachStream = ReceiverStream<Result<Command, Status>>;

    async fn attach(
        &self,
        _request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(Status::resource_exhausted("console full"))
    }
}

#[tokio::test]
async fn a_refused_attach_backs_off_instead_of_hammering() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let attempts = std::sync::Arc::default();
    let console = Refusing { attempts: std::sync::Arc::clone(&attempts) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(console))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let argv = ["control", "agent", "--server", &url, "--token", "t", "--name", "refused"];
    let argv = argv.into_iter().chain(["--backoff-min", "20ms", "--backoff-max", "400ms"]);
    let cmd = Cli::parse_from(argv).cmd;
    let ctx = Ctx::new();
    let agent = tokio::spawn(switchboard_control::run(cmd, ctx.clone()));
    // Over one second, a doubling backoff (≥ 10, 20, 40, … ms) allows at most ~9 attempts;
    // resetting to the minimum after each refusal would allow 50 or more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.shutdown.cancel();
    tokio::time::timeout(WAIT, agent).await.expect("agent stops").unwrap().expect("clean stop");
    let n = attempts.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..15).contains(&n), "{n} attach attempts in 1 s");
}
