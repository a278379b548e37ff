//! TLS on our HTTP listeners, on real processes with a throw-away CA: the tracker collector
//! serves HTTPS with `--tls-cert/--tls-key`, requires client certificates with
//! `--tls-client-ca`, refuses plaintext, and an unusable certificate file exits 64; the admin
//! server of any role does the same with `--admin-tls-*`; the jobproxy serves clients and
//! callbacks over HTTPS; the aggregator dials `wss://`.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchboard_testkit::{free_port, make_certs};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

mod support;

use support::{Proc, listening, start};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn collector(dir: &Path, addr: SocketAddr, tls: &[&str]) -> Proc {
    let store = format!("sqlite://{}/t.db", dir.display());
    let listen = addr.to_string();
    let args =
        [&["tracker", "collector", "--listen", &listen, "--store", &store][..], tls].concat();
    start(&args, dir)
}

fn client(dir: &Path, with_cert: bool) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = vec![CertificateDer::from_pem_file(dir.join("client.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs one event over TLS; the status code, or the error that prevented an answer.
async fn post_event(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Result<u16, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let body = format!(
        r#"{{"objectId":1,"objectType":"user","action":"view","subjectId":2,"subjectType":"article","datetimeStamp":{now}}}"#
    );
    let req = format!(
        "POST /track HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, tls, &req).await
}

/// Sends `req` (which asks the server to close) over TLS; the answer's status code, or the
/// error that prevented one.
async fn exchange(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    req: &str,
) -> Result<u16, String> {
    exchange_full(addr, tls, req).await.map(|(status, _)| status)
}

/// [`exchange`], with the answer's body.
async fn exchange_full(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    req: &str,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    status.zip(body).ok_or_else(|| text.into_owned())
}

/// A POST of `body` to `path` that asks the server to close afterwards.
fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Plaintext on a TLS port gets no HTTP answer.
async fn assert_plaintext_unanswered(addr: SocketAddr) {
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/"), "plaintext was answered");
}

/// The admin server of a role (here the job server simulator) with `--admin-tls-*`: HTTPS,
/// then mutual TLS; plaintext unanswered; a lone `--admin-tls-cert` and the plain-HTTP probe
/// are configuration errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_serves_https_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let readyz = |addr: SocketAddr| {
        format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
    };
    let sim = |admin: SocketAddr, tls: &[&str]| {
        let (admin, listen) = (admin.to_string(), format!("127.0.0.1:{}", free_port()));
        let args = [&["sim", "jobserver", "--listen", &listen, "--admin-addr", &admin][..], tls];
        start(&args.concat(), dir.path())
    };
    let tls = ["--admin-tls-cert", "server.pem", "--admin-tls-key", "server.key"];
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = sim(admin, &tls);
    listening(admin).await;
    assert_eq!(exchange(admin, &client(dir.path(), false), &readyz(admin)).await, Ok(200));
    assert_plaintext_unanswered(admin).await;
    drop(server);

    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _server = sim(admin, &[&tls[..], &["--admin-tls-client-ca", "ca.pem"]].concat());
    listening(admin).await;
    let anonymous = exchange(admin, &client(dir.path(), false), &readyz(admin)).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    assert_eq!(exchange(admin, &client(dir.path(), true), &readyz(admin)).await, Ok(200));

    for args in [
        &["sim", "jobserver", "--admin-tls-cert", "server.pem"][..],
        &["probe", "--admin-tls-cert", "server.pem", "--admin-tls-key", "server.key"],
    ] {
        let out = Command::new(BIN).args(args).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("--admin-tls"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_serves_https_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls = ["--tls-cert", "server.pem", "--tls-key", "server.key"];
    let server = collector(dir.path(), addr, &tls);
    listening(addr).await;
    assert_eq!(post_event(addr, &client(dir.path(), false)).await, Ok(202));
    assert_plaintext_unanswered(addr).await;
    drop(server);

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mtls = [&tls[..], &["--tls-client-ca", "ca.pem"]].concat();
    let _server = collector(dir.path(), addr, &mtls);
    listening(addr).await;
    assert!(post_event(addr, &client(dir.path(), false)).await.is_err(), "no client certificate");
    assert_eq!(post_event(addr, &client(dir.path(), true)).await, Ok(202));
}

/// The jobproxy with `--tls-cert/--tls-key` and no `--public-url`: its default callback URL is
/// `https://` (what its listener speaks), a job server calls back over TLS, and the client's
/// held request, also over TLS, gets the report byte for byte; plaintext is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobproxy_serves_clients_and_callbacks_over_https() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    // The job server: one start on a plain connection (upstreams are http://), answered
    // `running`; then the report is POSTed to the callback URL the proxy put in the start.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    let tls = client(dir.path(), false);
    let report = format!(
        r#"{{"id":"j1","state":"completed","startedAt":"2026-12-06T00:00:00.000Z","proof":"{}"}}"#,
        "AB".repeat(20)
    );
    let job_server = {
        let (tls, report) = (tls.clone(), report.clone());
        tokio::spawn(async move {
            let (stream, _) = upstream.accept().await.unwrap();
            let mut conn = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                conn.read_line(&mut line).await.unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            conn.read_exact(&mut body).await.unwrap();
            let start: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let answer = r#"{"state":"running","id":"j1"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            conn.write_all(format!("{head}{answer}").as_bytes()).await.unwrap();
            let callback = start["callback"].as_str().unwrap().to_owned();
            let rest = callback.strip_prefix("https://").expect("an https:// callback URL");
            let (authority, path) = rest.split_at(rest.find('/').unwrap());
            let addr: SocketAddr = authority.parse().unwrap();
            (callback.clone(), exchange(addr, &tls, &post(addr, path, &report)).await)
        })
    };
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let args = ["jobproxy", "--listen", &listen, "--upstream", &upstream_url];
    let _proxy = start(
        &[&args[..], &["--tls-cert", "server.pem", "--tls-key", "server.key"]].concat(),
        dir.path(),
    );
    listening(addr).await;
    let request = post(addr, "/", r#"{"account":"acme","wait":true}"#);
    let (status, body) = exchange_full(addr, &tls, &request).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, report, "the report byte for byte");
    let (callback, callback_status) = job_server.await.unwrap();
    assert!(callback.starts_with(&format!("https://{addr}/callback/")), "{callback}");
    let callback_status = callback_status.unwrap();
    assert!(
        callback_status == 200 || callback_status == 202,
        "callback answered {callback_status}"
    );
    assert_plaintext_unanswered(addr).await;
}

/// A TLS-terminating front on a free loopback port for `backend`, as a proxy in front of a
/// websocket server; returns its port.
async fn tls_front(dir: &Path, backend: SocketAddr) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// The aggregator dials `wss://` with `--tls-ca` (here through a TLS front of the simulator)
/// and every report is checked exact; `wss://` without `--tls-ca`, or `--tls-ca` with `ws://`,
/// is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_reports_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let backend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = backend.to_string();
    let sim = tokio::process::Command::new(BIN)
        .args(["sim", "wsserver", "--listen", &listen, "--interval", "1s", "--rate", "500"])
        .args(["--expect-reports", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    listening(backend).await;
    let server = format!("wss://127.0.0.1:{}/ws", tls_front(dir.path(), backend).await);
    let args = ["aggregator", "--server", &server, "--interval", "1s", "--tls-ca", "ca.pem"];
    let _aggregator = start(&args, dir.path());
    let out = tokio::time::timeout(Duration::from_secs(40), sim.wait_with_output())
        .await
        .expect("the simulator checked 3 reports in time")
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("checked=3 mismatches=0"), "{out}");

    for args in [
        &["aggregator", "--server", "wss://127.0.0.1:1/ws"][..],
        &["aggregator", "--server", "ws://127.0.0.1:1/ws", "--tls-ca", "ca.pem"],
    ] {
        let out = Command::new(BIN).args(args).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("--tls-ca"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn an_unusable_certificate_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    let out = Command::new(BIN)
        .args(["tracker", "collector", "--listen", "127.0.0.1:0", "--tls-cert", "empty.pem"])
        .args(["--tls-key", "key.pem", "--store", "sqlite://t.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty.pem"), "{out:?}");
}
