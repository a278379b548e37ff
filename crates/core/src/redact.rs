//! Secrets kept out of output. Every URL that can reach an error, a log line, a trace or a
//! metric goes through [`url`] first; a token that a log line must name (to correlate lines)
//! goes through [`token`], and other tokens are never printed at all.
//!
//! One function for every crate, so a new credential form is handled everywhere at once.

use std::fmt;

/// Characters of a token that [`token`] shows.
const TOKEN_SHOWN: usize = 4;

/// `secret` shown as its first 4 characters and `…`: enough to tell log lines of different
/// tokens apart, far too little to use. Formats lazily (nothing is allocated).
pub fn token<T: fmt::Display>(secret: T) -> Token<T> {
    Token(secret)
}

/// See [`token`].
pub struct Token<T>(T);

impl<T: fmt::Display> fmt::Display for Token<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Passes the first `left` characters through and notes whether more came.
        struct Prefix<'a, 'b> {
            out: &'a mut fmt::Formatter<'b>,
            left: usize,
            cut: bool,
        }
        impl fmt::Write for Prefix<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if self.left == 0 {
                        self.cut = true;
                        return Ok(());
                    }
                    self.out.write_char(c)?;
                    self.left -= 1;
                }
                Ok(())
            }
        }
        let mut prefix = Prefix { out: f, left: TOKEN_SHOWN, cut: false };
        fmt::write(&mut prefix, format_args!("{}", self.0))?;
        if prefix.cut { f.write_str("…") } else { Ok(()) }
    }
}

/// Query parameters whose values are secrets (PostgreSQL, NATS, generic).
const SECRET_PARAMS: [&str; 6] = ["password", "sslpassword", "token", "secret", "key", "pass"];

/// `raw` with its credentials masked: the password of `user:pass@` (`user:***@`), a bare
/// `token@` (`***@`: NATS takes a token there), and the values of secret query parameters
/// (`?password=***`). Works on malformed input too (the error messages need it most):
/// everything before the last `@` of the authority is treated as credentials.
pub fn url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let path_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(path_at);
    let mut out = String::with_capacity(raw.len());
    out.push_str(scheme);
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            match creds.split_once(':') {
                Some((user, _)) if !user.is_empty() => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                _ => out.push_str("***"),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let (query, fragment) =
                query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            let masked: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=***")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&masked.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{token, url};

    #[test]
    fn tokens_show_only_their_start() {
        assert_eq!(token("0001a2b3c4d5e6f7").to_string(), "0001…");
        assert_eq!(token(0xdead_beef_u32).to_string(), "3735…");
        assert_eq!(token("abc").to_string(), "abc");
        assert_eq!(token("ééééé").to_string(), "éééé…");
    }

    #[test]
    fn credentials_are_masked() {
        assert_eq!(url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("nats://user:secret@10.0.0.1:4222"), "nats://user:***@10.0.0.1:4222");
        assert_eq!(url("tls://tok@host"), "tls://***@host");
        assert_eq!(url("natz://user:secret@host:4222"), "natz://user:***@host:4222");
        assert_eq!(
            url("postgres://h/db?user=a&password=s3&sslmode=require"),
            "postgres://h/db?user=a&password=***&sslmode=require"
        );
        assert_eq!(url("http://h:1/x?Token=abc#frag"), "http://h:1/x?Token=***#frag");
        // Malformed: no scheme separator, still masked.
        assert_eq!(url("user:secret@host"), "user:***@host");
        assert_eq!(url(":secret@host"), "***@host");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for u in [
            "nats://127.0.0.1:4222",
            "http://jobs:9000/start",
            "sqlite://./data/x.db",
            "memory://",
            "",
        ] {
            assert_eq!(url(u), u);
        }
        // An @ in the path is not a credential.
        assert_eq!(url("http://h/a@b"), "http://h/a@b");
    }
}
