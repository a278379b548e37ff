//! TLS for the gateway and status listeners (`--tls-cert/--tls-key/--tls-client-ca`, the flags
//! every listener of the binary shares) and for clients dialling `https://` (`--tls-ca`, and a
//! client certificate when the server asks for one).
use std::path::{Path, PathBuf};

use switchboard_core::tls::TlsArgs;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// The listener's TLS configuration, if `--tls-cert` is set.
///
/// # Errors
/// A file is missing or unusable (a configuration error).
pub(crate) fn server(flags: &TlsArgs) -> Result<Option<ServerTlsConfig>> {
    let Some(pem) = flags.pem()? else { return Ok(None) };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(pem.cert, pem.key));
    if let Some(ca) = pem.client_ca {
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(config))
}

/// TLS flags of a client (`presence client(s)`, `presence online`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTls {
    /// PEM CA that signed the server's certificate; needed to dial an `https://` URL.
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (needs --tls-key and --tls-ca).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClientTls {
    /// `endpoint` (the value of `flag`) with TLS when its scheme is `https`.
    ///
    /// # Errors
    /// `https://` without `--tls-ca`, `--tls-ca` with `http://`, or an unreadable file.
    pub(crate) fn apply(&self, flag: &str, endpoint: Endpoint) -> Result<Endpoint> {
        let https = endpoint.uri().scheme_str() == Some("https");
        let Some(ca) = &self.tls_ca else {
            if https {
                return Err(Error::config(format!(
                    "{flag} {}: https:// needs --tls-ca",
                    endpoint.uri()
                )));
            }
            return Ok(endpoint);
        };
        if !https {
            return Err(Error::config(format!(
                "{flag} {}: --tls-ca needs an https:// URL",
                endpoint.uri()
            )));
        }
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(endpoint.tls_config(config)?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))
}
