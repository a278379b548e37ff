//! Checks of the URLs roles dial (`--gateway`, `--server`, `--status`, `--url`): clients take
//! `127.0.0.1:7070` or `ftp://…` for a URL and then fail every connection attempt with a bare
//! "transport error", retrying for ever. A scheme other than http(s) is a configuration error.
use axum::http::Uri;

/// Parses `url` given to `flag`, which must be `http://host[:port]` or `https://…`.
///
/// # Errors
/// A message naming `flag` and `url` and showing what a valid URL looks like.
pub fn http(flag: &str, url: &str) -> Result<Uri, String> {
    checked(flag, url, ["http", "https"], "http://host:port (https:// for TLS)")
}

/// Parses `url` given to `flag`, which must be `ws://host[:port]/path` or `wss://…`.
///
/// # Errors
/// A message naming `flag` and `url` and showing what a valid URL looks like.
pub fn websocket(flag: &str, url: &str) -> Result<Uri, String> {
    checked(flag, url, ["ws", "wss"], "ws://host:port/path (wss:// for TLS)")
}

fn checked(flag: &str, raw: &str, [plain, tls]: [&str; 2], example: &str) -> Result<Uri, String> {
    // Messages show the URL with its password masked: they end up in logs and terminals.
    let url = crate::redact::url(raw);
    let uri: Uri = raw.parse().map_err(|e| format!("{flag} {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some(s) if (s == plain || s == tls) && uri.host().is_some() => Ok(uri),
        Some(s) if s == plain || s == tls => Err(format!("{flag} {url:?} has no host")),
        Some(other) => Err(format!("{flag} {url:?}: {other}:// is not supported; use {example}")),
        None => Err(format!(
            "{flag} {url:?} has no scheme; write it as {plain}://{url} ({tls}://{url} for TLS)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::http;

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert!(http("--server", "http://127.0.0.1:7070").is_ok());
        assert!(http("--server", "https://console.example").is_ok());
        let err = http("--server", "127.0.0.1:7070").unwrap_err();
        assert!(err.contains("http://127.0.0.1:7070") && err.contains("--server"), "{err}");
        assert!(http("--server", "ftp://x:21").unwrap_err().contains("not supported"));
        assert!(http("--server", "localhost").unwrap_err().contains("http://localhost"));
        assert!(http("--server", "http://[::1").is_err());
    }

    #[test]
    fn only_websocket_urls_pass_for_websockets() {
        assert!(super::websocket("--server", "ws://127.0.0.1:5050/ws").is_ok());
        let err = super::websocket("--server", "127.0.0.1:5050").unwrap_err();
        assert!(err.contains("ws://127.0.0.1:5050"), "{err}");
        assert!(super::websocket("--server", "http://x/ws").unwrap_err().contains("ws://host"));
    }

    #[test]
    fn messages_mask_the_password() {
        let err = http("--gateway", "natz://user:hunter2@gw:50051").unwrap_err();
        assert!(err.contains("user:***@gw") && !err.contains("hunter2"), "{err}");
        let err = http("--gateway", "user:hunter2@gw:50051").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
