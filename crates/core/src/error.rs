//! Errors raised by the core crate (mostly at startup).
use std::net::SocketAddr;
use std::path::PathBuf;

/// A flag, setting or file the user gave is unusable: the one configuration error of every
/// crate. Each crate's `Error::Config` wraps it as its source, so the binary finds it in any
/// error's chain and exits 64 without a list of crates to keep up to date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// A configuration error saying `message` (name the flag and the value's problem).
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// Whether `err` or any of its causes is a [`ConfigError`].
    pub fn in_chain(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            if e.is::<Self>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// Core error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TOML config file could not be read.
    #[error("cannot read config file {path}")]
    ConfigRead {
        /// File that failed.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML config file is not valid.
    #[error("invalid config file {path}: {message}")]
    ConfigParse {
        /// File that failed.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Telemetry could not be initialised.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A TLS certificate, key or CA file is unusable.
    #[error("tls")]
    Tls(#[source] ConfigError),
    /// A listening socket could not be bound; names the address, since a process may have
    /// several listeners and "Address already in use" alone does not say which one.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Serving a socket failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `err` and its causes joined with ": ": how every log line, CLI message and wrapped error
/// prints an error. Our errors name only their own step (`bus`, `cannot listen on <addr>`) and
/// leave the cause to their source, so the chain says each thing once; a cause whose text
/// already ends the message (some libraries repeat their source) is skipped. tonic's
/// "transport error" alone does not say "Connection refused"; its causes do.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_is_found_under_any_wrapper() {
        let err = Error::Tls(ConfigError::new("cert.pem: no PEM certificate in it"));
        assert!(ConfigError::in_chain(&err));
        assert_eq!(describe(&err), "tls: cert.pem: no PEM certificate in it");
        assert!(!ConfigError::in_chain(&Error::Io(std::io::Error::other("disk full"))));
    }

    #[test]
    fn describe_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = Error::Bind { addr: ([127, 0, 0, 1], 7070).into(), source: io };
        assert_eq!(describe(&err), "cannot listen on 127.0.0.1:7070: Connection refused");
        let err = Error::Io(std::io::Error::other("disk full"));
        assert_eq!(describe(&err), "i/o: disk full");
    }
}
