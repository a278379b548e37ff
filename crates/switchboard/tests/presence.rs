//! End-to-end tests of presence on the real binary: gateway, status and clients as separate
//! processes on 127.0.0.1, in embedded mode (memory bus + SQLite) and distributed mode
//! (NATS JetStream + PostgreSQL), including `kill -9` of the status service and of a gateway.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_presence::fetch_online;
use switchboard_testkit::free_port;

#[path = "support/idle.rs"]
mod idle;
mod support;

use support::Proc;

/// A presence process of the binary with its admin port (the shared [`Proc`] kills it on drop).
struct Node {
    proc: Proc,
    admin: u16,
}

impl Node {
    fn spawn(args: &[&str]) -> Self {
        let admin = free_port();
        let mut cmd = Proc::command();
        cmd.args(["--admin-addr", &format!("127.0.0.1:{admin}"), "--grace", "5s"]).args(args);
        Self { proc: Proc::spawn(cmd.stderr(Stdio::inherit())), admin }
    }

    /// `kill -9`.
    fn kill9(mut self) {
        self.proc.kill9();
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.proc.terminate()
    }

    /// Waits until this process's `/readyz` answers 200.
    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "{url} never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of gauge `name` on this process's `/metrics` (0 if absent).
    async fn gauge(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let Ok(res) = reqwest::get(&url).await else { return -1.0 };
        let body = res.text().await.unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Polls until `probe` returns `want`; panics with the last value after `within`.
async fn eventually<F, Fut>(what: &str, want: f64, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let deadline = Instant::now() + within;
    let mut last = f64::NAN;
    while Instant::now() < deadline {
        last = probe().await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: last value {last}, expected {want} within {within:?}");
}

async fn online(url: &str) -> f64 {
    fetch_online(url).await.map_or(-1.0, |n| n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_counts_clients_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("presence.db").display());
    let (gw_port, st_port) = (free_port(), free_port());
    let gateway_listen = format!("127.0.0.1:{gw_port}");
    let status_listen = format!("127.0.0.1:{st_port}");
    let status_url = format!("http://{status_listen}");
    let all_args = [
        "presence",
        "all",
        "--gateway-listen",
        &gateway_listen,
        "--status-listen",
        &status_listen,
        "--store",
        &store,
    ];
    let server = Node::spawn(&all_args);
    let clients = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        "25",
        "--gateway",
        &format!("http://{gateway_listen}"),
        "--max-backoff",
        "500ms",
    ]);
    eventually("online users", 25.0, Duration::from_secs(30), || online(&status_url)).await;

    // kill -9 with clients connected: the restarted process answers with the same count.
    server.kill9();
    let server = Node::spawn(&all_args);
    eventually("online users after kill -9", 25.0, Duration::from_secs(20), || online(&status_url))
        .await;
    // And it stays exact (no double counting of reconnected clients).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(online(&status_url).await, 25.0);

    assert!(clients.terminate().success(), "clients exit 0 on SIGTERM");
    assert!(server.terminate().success(), "server drains and exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_mode_fails_over_gateways_and_restarts_status_without_double_counting() {
    let nats = switchboard_testkit::NatsServer::start();
    let pg = switchboard_testkit::PostgresServer::start();
    let (g1, g2, st) = (free_port(), free_port(), free_port());
    let status_url = format!("http://127.0.0.1:{st}");
    let gateway = |port: u16, id: &str| {
        Node::spawn(&[
            "presence",
            "gateway",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bus",
            &nats.url,
            "--gateway-id",
            id,
        ])
    };
    let status_replica = |port: u16, replica: &str| {
        Node::spawn(&[
            "presence",
            "status",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bus",
            &nats.url,
            "--store",
            &pg.url,
            "--replica-id",
            replica,
            "--snapshot-interval",
            "1s",
        ])
    };
    let gw1 = gateway(g1, "gw1");
    let gw2 = gateway(g2, "gw2");
    let status = status_replica(st, "a");
    // Both gateways listen before the clients start, or a slow start sends them all to one.
    gw1.ready().await;
    gw2.ready().await;
    let clients = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        "40",
        "--gateway",
        &format!("http://127.0.0.1:{g1},http://127.0.0.1:{g2}"),
        "--max-backoff",
        "500ms",
    ]);
    eventually("online users", 40.0, Duration::from_secs(30), || online(&status_url)).await;
    // A second replica started now rebuilds the window from the stream and agrees.
    let st_b = free_port();
    let status_b = status_replica(st_b, "b");
    let url_b = format!("http://127.0.0.1:{st_b}");
    eventually("online users on replica b", 40.0, Duration::from_secs(30), || online(&url_b)).await;
    let on_gw2 = gw2.gauge("presence_gateway_sessions").await;
    assert!(on_gw2 > 0.0 && on_gw2 < 40.0, "clients spread over both gateways ({on_gw2} on gw2)");

    // A gateway dies with clients connected: they all move to the other one, counted once.
    gw1.kill9();
    eventually("sessions on gw2", 40.0, Duration::from_secs(20), || {
        gw2.gauge("presence_gateway_sessions")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(online(&status_url).await, 40.0, "no double counting after failover");

    // The status service is killed mid-run and restarted: same count from snapshot + stream.
    status.kill9();
    let status = status_replica(st, "a");
    eventually("online users after status kill -9", 40.0, Duration::from_secs(20), || {
        online(&status_url)
    })
    .await;

    assert!(clients.terminate().success());
    assert!(gw2.terminate().success());
    assert!(status.terminate().success());
    assert!(status_b.terminate().success());
}

/// Established TCP connections (IPv4) whose remote end is `port`: the clients' side of every
/// connection to a server on that port.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let remote_port = cols.get(2).and_then(|r| r.rsplit(':').next());
            remote_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && cols.get(3) == Some(&"01")
        })
        .count()
}

/// Behind an L7 gRPC proxy a gateway sees a few connections carrying thousands of streams: each
/// stream is pinged and counted like a client with a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_clients_multiplexed_on_one_connection_are_all_pinged_and_counted() {
    const MULTIPLEXED: usize = 3_000;
    const DEVICES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("presence.db").display());
    let (gw_port, st_port) = (free_port(), free_port());
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let status_url = format!("http://127.0.0.1:{st_port}");
    let server = Node::spawn(&[
        "presence",
        "all",
        "--gateway-listen",
        &format!("127.0.0.1:{gw_port}"),
        "--status-listen",
        &format!("127.0.0.1:{st_port}"),
        "--store",
        &store,
    ]);
    server.ready().await;
    let multiplexed = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        &MULTIPLEXED.to_string(),
        "--streams-per-connection",
        &MULTIPLEXED.to_string(),
        "--ramp",
        "5000",
        "--gateway",
        &gateway_url,
    ]);
    let devices = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        &DEVICES.to_string(),
        "--gateway",
        &gateway_url,
    ]);
    // A client is counted only once its Pong reached the status service: all of them were pinged.
    let want = (MULTIPLEXED + DEVICES) as f64;
    eventually("online users", want, Duration::from_secs(60), || online(&status_url)).await;
    assert_eq!(multiplexed.gauge("presence_clients_connected").await, MULTIPLEXED as f64);
    assert_eq!(server.gauge("presence_gateway_sessions").await, want);
    // One connection carries the multiplexed clients; each device has its own.
    assert_eq!(connections_to(gw_port), 1 + DEVICES, "connections to the gateway");
    assert_eq!(server.gauge("presence_gateway_refused_total").await, 0.0);

    assert!(multiplexed.terminate().success());
    assert!(devices.terminate().success());
    assert!(server.terminate().success());
}

/// Past `--max-clients` the extra streams of a multiplexed connection are refused at once with
/// RESOURCE_EXHAUSTED (counted), not queued behind an HTTP/2 stream limit; the held ones keep
/// being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_max_clients_on_one_connection_are_refused_not_stalled() {
    const MAX: usize = 200;
    const CLIENTS: usize = 260;
    let port = free_port();
    let gateway = Node::spawn(&[
        "presence",
        "gateway",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--max-clients",
        &MAX.to_string(),
    ]);
    gateway.ready().await;
    let clients = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        &CLIENTS.to_string(),
        "--streams-per-connection",
        &CLIENTS.to_string(),
        "--gateway",
        &format!("http://127.0.0.1:{port}"),
    ]);
    eventually("held sessions", MAX as f64, Duration::from_secs(30), || {
        gateway.gauge("presence_gateway_sessions")
    })
    .await;
    eventually("clients holding a stream", MAX as f64, Duration::from_secs(30), || {
        clients.gauge("presence_clients_connected")
    })
    .await;
    let refused = gateway.gauge("presence_gateway_refused_total").await;
    assert!(refused >= (CLIENTS - MAX) as f64, "only {refused} streams refused");
    let pongs = gateway.gauge("presence_gateway_pongs_total").await;
    eventually("held clients still answering", 1.0, Duration::from_secs(10), || async {
        f64::from(u8::from(gateway.gauge("presence_gateway_pongs_total").await > pongs))
    })
    .await;

    assert!(clients.terminate().success());
    assert!(gateway.terminate().success());
}

/// TLS and client tokens on real processes: a gateway with a server certificate and
/// `--client-auth-key` admits only clients that trust its CA and present their own token; the
/// status service answers over TLS. Clients without a token, with tokens of another key, or
/// speaking plaintext are refused and never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_client_tokens_admit_only_clients_that_hold_them() {
    const KEY: &str = "presence-test-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    switchboard_testkit::make_certs(dir.path());
    let pem = |name: &str| dir.path().join(name).display().to_string();
    let (ca, cert, key) = (pem("ca.pem"), pem("server.pem"), pem("server.key"));
    let nats = switchboard_testkit::NatsServer::start();
    let store = format!("sqlite://{}", dir.path().join("presence.db").display());
    let (gw, st) = (free_port(), free_port());
    let tls = ["--tls-cert", &cert, "--tls-key", &key];
    let gw_listen = format!("127.0.0.1:{gw}");
    let mut gateway_args = vec!["presence", "gateway", "--listen", &gw_listen, "--bus", &nats.url];
    gateway_args.extend(tls);
    gateway_args.extend(["--client-auth-key", KEY]);
    let gateway = Node::spawn(&gateway_args);
    let st_listen = format!("127.0.0.1:{st}");
    let mut status_args =
        vec!["presence", "status", "--listen", &st_listen, "--bus", &nats.url, "--store", &store];
    status_args.extend(tls);
    let status = Node::spawn(&status_args);
    gateway.ready().await;
    status.ready().await;

    let https = format!("https://127.0.0.1:{gw}");
    let clients = |count: &str, extra: &[&str]| {
        let mut args = vec!["presence", "clients", "--count", count, "--gateway", &https];
        args.extend(["--tls-ca", &ca, "--max-backoff", "300ms"]);
        args.extend_from_slice(extra);
        Node::spawn(&args)
    };
    let good = clients("5", &["--client-auth-key", KEY]);
    let no_token = clients("3", &[]);
    let other_key = clients("3", &["--client-auth-key", "some-other-key-0123456789"]);
    let plaintext = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        "2",
        "--gateway",
        &format!("http://127.0.0.1:{gw}"),
    ]);
    // One more client, with a token minted for its id by `presence token`.
    let id = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    let minted = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["presence", "token", "--client-auth-key", KEY, "--id", id])
        .output()
        .expect("presence token");
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let single = Node::spawn(&[
        "presence",
        "client",
        "--id",
        id,
        "--client-token",
        &token,
        "--gateway",
        &https,
        "--tls-ca",
        &ca,
    ]);

    let status_tls = switchboard_presence::ClientTls {
        tls_ca: Some(ca.clone().into()),
        ..switchboard_presence::ClientTls::default()
    };
    let status_url = format!("https://127.0.0.1:{st}");
    let online_tls = || async {
        switchboard_presence::fetch_online_with(&status_url, &status_tls)
            .await
            .map_or(-1.0, |n| n as f64)
    };
    eventually("online users over TLS", 6.0, Duration::from_secs(30), online_tls).await;
    eventually("refused clients keep being refused", 1.0, Duration::from_secs(10), || async {
        f64::from(u8::from(gateway.gauge("presence_gateway_unauthenticated_total").await >= 6.0))
    })
    .await;
    assert_eq!(gateway.gauge("presence_gateway_sessions").await, 6.0);
    assert_eq!(plaintext.gauge("presence_clients_connected").await, 0.0);
    // Plaintext to the status service is refused too.
    assert!(fetch_online(&format!("http://127.0.0.1:{st}")).await.is_err());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(online_tls().await, 6.0, "nobody else was counted");

    for p in [good, no_token, other_key, plaintext, single] {
        assert!(p.terminate().success());
    }
    assert!(gateway.terminate().success());
    assert!(status.terminate().success());
}

/// The gateway's idle timeout closes connections without a stream (silent ones, and ones
/// dripping the HTTP/2 preface) but never a client's stream, however long it lasts: clients
/// attached for several timeouts are never reconnected and stay counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_closes_idle_connections_but_never_a_stream() {
    const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("presence.db").display());
    let (gw_port, st_port) = (free_port(), free_port());
    let gateway: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let status_url = format!("http://127.0.0.1:{st_port}");
    let server = Node::spawn(&[
        "presence",
        "all",
        "--gateway-listen",
        &gateway.to_string(),
        "--status-listen",
        &format!("127.0.0.1:{st_port}"),
        "--store",
        &store,
        "--idle-timeout",
        "2s",
    ]);
    server.ready().await;
    let clients = Node::spawn(&[
        "presence",
        "clients",
        "--count",
        "20",
        "--streams-per-connection",
        "10",
        "--gateway",
        &format!("http://{gateway}"),
    ]);
    eventually("online users", 20.0, Duration::from_secs(30), || online(&status_url)).await;

    let silent = idle::silent(gateway, 1_000).await;
    let drips = idle::dripping(gateway, 100, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    idle::all_closed(silent, drips, IDLE_TIMEOUT + Duration::from_secs(8)).await;
    // The idle ones are gone after several timeouts; the streams outlived all of them.
    assert!(server.gauge("presence_gateway_sessions").await == 20.0, "streams held");
    assert_eq!(clients.gauge("presence_client_reconnects_total").await, 0.0, "no stream was cut");
    assert_eq!(clients.gauge("presence_clients_connected").await, 20.0);
    assert_eq!(connections_to(gw_port), 2, "two multiplexed connections stay open");
    assert!(
        server.gauge("grpc_connections_idle_closed_total{server=\"presence-gateway\"}").await
            >= 1_000.0
    );
    assert!(clients.terminate().success());
    assert!(server.terminate().success());
}
