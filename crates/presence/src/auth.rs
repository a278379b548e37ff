//! Client authentication. With `--client-auth-key` a gateway admits a stream only if its
//! `client-token` metadata is HMAC-SHA256(key, client-id): whoever issues client ids mints the
//! tokens (`switchboard presence token`), so a client id cannot be claimed by whoever connects,
//! and the gateway checks it with no per-client state.
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::{Error, Result};

/// Metadata key carrying the client's token on `Attach`.
pub const CLIENT_TOKEN_HEADER: &str = "client-token";

/// Shortest key accepted: a guessable key would let anyone mint tokens.
const MIN_KEY_BYTES: usize = 16;

/// The shared key tokens are derived from.
#[derive(Clone)]
pub struct ClientAuth {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth(***)")
    }
}

impl ClientAuth {
    /// Tokens under `key` (`--client-auth-key`).
    ///
    /// # Errors
    /// The key is shorter than 16 bytes.
    pub fn new(key: &str) -> Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::config(format!(
                "--client-auth-key must be at least {MIN_KEY_BYTES} bytes"
            )));
        }
        let key = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|e| Error::config(format!("--client-auth-key: {e}")))?;
        Ok(Self { key })
    }

    /// The token of `client` (lower-case hex).
    pub fn token(&self, client: uuid::Uuid) -> String {
        hex::encode(self.mac(client).finalize().into_bytes())
    }

    /// Whether `token` is `client`'s (compared in constant time).
    pub fn verify(&self, client: uuid::Uuid, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token.trim()) else { return false };
        self.mac(client).verify_slice(&bytes).is_ok()
    }

    /// The MAC over `client`'s canonical (hyphenated, lower-case) id.
    fn mac(&self, client: uuid::Uuid) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(client.hyphenated().to_string().as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_belongs_to_one_client_and_one_key() {
        let auth = ClientAuth::new("0123456789abcdef-key").unwrap();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let token = auth.token(a);
        assert_eq!(token.len(), 64);
        assert!(auth.verify(a, &token));
        assert!(!auth.verify(b, &token), "another client's token");
        let other = ClientAuth::new("another-key-of-16-bytes").unwrap();
        assert!(!other.verify(a, &token), "a token of another key");
        for bad in ["", "zz", &token[..63], &token[..62]] {
            assert!(!auth.verify(a, bad), "{bad:?}");
        }
        assert!(ClientAuth::new("short").is_err());
        assert_eq!(format!("{auth:?}"), "ClientAuth(***)");
    }
}
