//! TLS on our HTTP listeners, on real processes with a throw-away CA: the tracker collector
//! serves HTTPS with `--tls-cert/--tls-key`, requires client certificates with
//! `--tls-client-ca`, refuses plaintext, and an unusable certificate file exits 64; the admin
//! server of any role does the same with `--admin-tls-*`.
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
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| text.into_owned())
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
