//! TLS for the gateway and status listeners (`--tls-cert/--tls-key/--tls-client-ca`, the flags
//! every listener of the binary shares) and for clients dialling `https://` (`--tls-ca`, and a
//! client certificate when the server asks for one).
use std::path::Path;

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

/// The gateway's TLS (its own HTTP/2 server): rustls with ALPN `h2`, if `--tls-cert` is set.
///
/// # Errors
/// A file is missing or unusable (a configuration error).
pub(crate) fn gateway(flags: &TlsArgs) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
    let Some(config) = flags.server_config()? else { return Ok(None) };
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(std::sync::Arc::new(config)))
}

/// TLS flags of a client (`presence client(s)`, `presence online`): core's, shared with every
/// client of the binary.
pub use switchboard_core::tls::ClientTlsArgs as ClientTls;

/// `endpoint` (the value of `flag`) with TLS when its scheme is `https`.
///
/// # Errors
/// `https://` without `--tls-ca`, `--tls-ca` with `http://`, or an unreadable file.
pub(crate) fn apply(tls: &ClientTls, flag: &str, endpoint: Endpoint) -> Result<Endpoint> {
    let https = endpoint.uri().scheme_str() == Some("https");
    let Some(ca) = &tls.tls_ca else {
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
    if let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(endpoint.tls_config(config)?)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))
}
