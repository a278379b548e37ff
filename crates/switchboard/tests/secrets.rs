//! Credentials never reach output: every role is run, failing and succeeding, with a secret
//! planted in each URL it takes, against real NATS and PostgreSQL servers, and everything it
//! prints (stdout and stderr, at debug level) is searched for the secret.
use std::process::{Output, Stdio};
use std::time::Duration;

use switchboard_testkit::{NatsServer, PostgresServer, free_port};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const SECRET: &str = "pl4nted-s3cret";

fn switchboard(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("SWITCHBOARD_") || k.starts_with("OTEL_")) {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn assert_no_secret(what: &str, out: &Output) {
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(SECRET), "{what} printed the secret:\n{text}");
}

/// Runs to its own end (a refused configuration or an unreachable engine).
async fn failing(args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(60), switchboard(args).output())
        .await
        .expect("a failing run ends")
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail: {out:?}");
    assert_no_secret(&format!("{args:?}"), &out);
    out
}

/// Runs the role with its admin server on a known port until `/readyz` answers 200, then
/// SIGTERM; returns everything it printed.
async fn succeeding(args: &[&str]) -> Output {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut all = args.to_vec();
    all.extend(["--admin-addr", &admin]);
    let mut child = switchboard(&all).spawn().unwrap();
    let ready = format!("http://{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().await.unwrap();
            panic!("{args:?} exited with {status} before it was ready: {out:?}");
        }
        if reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{args:?} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(out.status.success(), "{args:?} after SIGTERM: {out:?}");
    assert_no_secret(&format!("{args:?}"), &out);
    out
}

#[tokio::test]
async fn refused_urls_are_shown_without_their_credentials() {
    let out =
        failing(&["presence", "gateway", "--bus", &format!("natz://user:{SECRET}@host:4222")])
            .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("natz://user:***@host:4222"), "{out:?}");

    let out = failing(&["tracker", "worker", "--store", &format!("mysql://u:{SECRET}@h/db")]).await;
    assert_eq!(out.status.code(), Some(64));

    let upstream = format!("http://u:{SECRET}@127.0.0.1:1");
    let out = failing(&["jobproxy", "--upstream", &upstream]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engines_are_named_without_credentials() {
    // Something listens but is not PostgreSQL: the store fails at once (no start-up wait).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let store = format!("postgres://u:{SECRET}@127.0.0.1:{port}/db?password={SECRET}");
    failing(&["presence", "status", "--store", &store]).await;

    let bus = format!("nats://u:{SECRET}@127.0.0.1:{}", free_port());
    failing(&["tracker", "collector", "--listen", "127.0.0.1:0", "--bus", &bus]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_roles_never_print_their_credentials() {
    let (nats, pg) = tokio::join!(
        tokio::task::spawn_blocking(NatsServer::start),
        tokio::task::spawn_blocking(PostgresServer::start),
    );
    let (nats, pg) = (nats.unwrap(), pg.unwrap());
    // Neither test server checks credentials (no auth, trust): any planted ones are accepted
    // and must still be kept out of the output.
    let bus = nats.url.replace("nats://", &format!("nats://u:{SECRET}@"));
    let store = pg.url.replace("postgres://postgres@", &format!("postgres://postgres:{SECRET}@"));
    succeeding(&["tracker", "worker", "--bus", &bus, "--store", &store]).await;
    succeeding(&[
        "presence",
        "status",
        "--listen",
        "127.0.0.1:0",
        "--bus",
        &bus,
        "--store",
        &store,
    ])
    .await;
    succeeding(&["presence", "gateway", "--listen", "127.0.0.1:0", "--bus", &bus]).await;
}
