//! Throw-away TLS material for tests, made with the `openssl` command.

/// Writes into `dir`: a CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`, `client.key`), all
/// signed by that CA and valid for a day.
///
/// # Panics
/// `openssl` is missing or fails.
pub fn make_certs(dir: &std::path::Path) {
    let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 -subj /CN=switchboard-test-ca
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl req $ec -keyout $who.key -out $who.csr -subj /CN=$who
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile $who.ext -out $who.pem
done"#;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh (openssl)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}
