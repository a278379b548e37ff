//! TLS for our HTTP listeners, with the flags every TLS-capable role shares:
//! `--tls-cert`/`--tls-key` (the server's identity) and `--tls-client-ca` (mutual TLS: clients
//! must present a certificate signed by it). rustls on ring; TLS 1.2 and 1.3; HTTP/1.1.
//! Clients dialling `https://` or `wss://` take [`ClientTlsArgs`]: `--tls-ca` (the CA they
//! trust) and, for mutual TLS, `--tls-cert`/`--tls-key`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The PEM contents of [`TlsArgs`].
#[derive(Clone)]
pub struct Pem {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
    /// CA of client certificates (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
}

/// Server TLS flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) this listener presents; turns TLS on (needs --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA that must have signed every client's certificate (mutual TLS).
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// TLS flags of a client (`presence client(s)`, `presence online`, `aggregator`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA that signed the server's certificate; needed to dial an `https://` or `wss://`
    /// URL (only this CA is trusted).
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (needs --tls-key and --tls-ca).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The rustls configuration these flags describe (trusting `--tls-ca` only, presenting
    /// `--tls-cert` when set), or `None` without `--tls-ca`.
    ///
    /// # Errors
    /// A file is missing or holds no usable certificate or key (a configuration error).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(ca)? {
            roots.add(c).map_err(|e| bad(ca, &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(format!("{}: {e}", cert.display())))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// TLS flags of the admin server (`/healthz`, `/readyz`, `/metrics`), taken by every command;
/// the same meaning as [`TlsArgs`], under `--admin-` names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminTlsArgs {
    /// PEM certificate (chain) the admin server presents; turns TLS on (needs --admin-tls-key).
    #[arg(
        long,
        global = true,
        help_heading = "Global Options",
        env = "SWITCHBOARD_ADMIN_TLS_CERT"
    )]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of --admin-tls-cert.
    #[arg(long, global = true, help_heading = "Global Options", env = "SWITCHBOARD_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,

    /// PEM CA that must have signed every admin client's certificate (mutual TLS, e.g. for
    /// the Prometheus scraper).
    #[arg(
        long,
        global = true,
        help_heading = "Global Options",
        env = "SWITCHBOARD_ADMIN_TLS_CLIENT_CA"
    )]
    pub admin_tls_client_ca: Option<PathBuf>,
}

impl AdminTlsArgs {
    /// Whether any admin TLS flag is set.
    pub fn is_set(&self) -> bool {
        self.admin_tls_cert.is_some()
            || self.admin_tls_key.is_some()
            || self.admin_tls_client_ca.is_some()
    }

    /// As [`TlsArgs::server_config`]. (clap's `requires` does not hold across global flags,
    /// so the pairing is checked here.)
    ///
    /// # Errors
    /// A flag without its partner, or an unusable file (a configuration error).
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>> {
        if self.admin_tls_cert.is_some() != self.admin_tls_key.is_some()
            || (self.admin_tls_client_ca.is_some() && self.admin_tls_cert.is_none())
        {
            return Err(tls_error(
                "--admin-tls-cert and --admin-tls-key go together (and --admin-tls-client-ca needs them)"
                    .to_owned(),
            ));
        }
        TlsArgs {
            tls_cert: self.admin_tls_cert.clone(),
            tls_key: self.admin_tls_key.clone(),
            tls_client_ca: self.admin_tls_client_ca.clone(),
        }
        .server_config()
    }
}

impl TlsArgs {
    /// The rustls configuration these flags describe, or `None` without `--tls-cert`.
    ///
    /// # Errors
    /// A file is missing or holds no usable certificate or key (a configuration error).
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?;
        let builder = match &self.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(ca)? {
                    roots.add(c).map_err(|e| bad(ca, &e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| bad(ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls_error(format!("{}: {e}", cert.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// The PEM files these flags name, read and checked like [`Self::server_config`], for
    /// servers that take PEM bytes (tonic's gRPC listeners); `None` without `--tls-cert`.
    ///
    /// # Errors
    /// A file is missing or holds no usable certificate or key (a configuration error).
    pub fn pem(&self) -> Result<Option<Pem>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        // The same checks as for our HTTP listeners, so a bad file is refused the same way.
        self.server_config()?;
        let read = |path: &Path| std::fs::read(path).map_err(|e| bad(path, &e));
        Ok(Some(Pem {
            cert: read(cert)?,
            key: read(key)?,
            client_ca: self.tls_client_ca.as_deref().map(read).transpose()?,
        }))
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, &e))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

fn bad(path: &Path, e: &dyn std::fmt::Display) -> Error {
    tls_error(format!("{}: {e}", path.display()))
}

/// A TLS file problem: a configuration error (exit 64).
fn tls_error(message: impl Into<String>) -> Error {
    Error::Tls(crate::ConfigError::new(message))
}
