//! Optional TLS for the console ↔ agent stream: the console presents a certificate, agents
//! verify it against a CA; with a client CA on the console, agents must present certificates
//! too (mutual TLS). Without these flags the stream is plaintext and only the token protects
//! it — fine on loopback or inside a private network, not across untrusted ones.
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// Console TLS flags: the ones every TLS-capable listener shares (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
pub use switchboard_core::tls::TlsArgs as ServerTls;

/// Agent TLS flags: every client's (`--tls-ca`, `--tls-cert`, `--tls-key`) and the name to
/// expect.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentTls {
    /// The CA to trust and the agent's own certificate (mutual TLS).
    #[command(flatten)]
    pub client: switchboard_core::tls::ClientTlsArgs,

    /// Name the console's certificate must carry (default: the host of --server).
    #[arg(long, env = "SWITCHBOARD_TLS_DOMAIN", requires = "tls_ca")]
    pub tls_domain: Option<String>,
}

/// The console's TLS configuration, if `--tls-cert` is set.
///
/// # Errors
/// A file cannot be read.
pub(crate) async fn server_config(flags: &ServerTls) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&flags.tls_cert, &flags.tls_key) else { return Ok(None) };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(cert).await?, read(key).await?));
    if let Some(ca) = &flags.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca).await?));
    }
    Ok(Some(config))
}

impl AgentTls {
    /// The agent's TLS configuration, if enabled.
    ///
    /// # Errors
    /// A file cannot be read.
    pub(crate) async fn load(&self) -> Result<Option<ClientTlsConfig>> {
        let flags = &self.client;
        let Some(ca) = &flags.tls_ca else { return Ok(None) };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca).await?));
        if let (Some(cert), Some(key)) = (&flags.tls_cert, &flags.tls_key) {
            config = config.identity(Identity::from_pem(read(cert).await?, read(key).await?));
        }
        if let Some(domain) = &self.tls_domain {
            config = config.domain_name(domain.clone());
        }
        Ok(Some(config))
    }
}

async fn read(path: &Path) -> Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .map_err(|e| Error::config(format!("reading {}: {e}", path.display())))
}
