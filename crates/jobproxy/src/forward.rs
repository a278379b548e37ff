//! Several proxy nodes behind one public address: a callback that lands on a node other than
//! the one holding its request is forwarded over the bus (NATS request/reply) to the owner,
//! which the token names ([`Token::node`]).
//!
//! Each node answers requests on `jobproxy.callback.<node-id>`; a message is the 32-hex-digit
//! token followed by the callback body, the reply is the HTTP status the owner gave it, which
//! the receiving node passes back to the job server. The owner's node gone (no responders) is
//! an unknown token (404: its clients are gone with it); no answer in time, or too many
//! forwards in flight (`FORWARDS_IN_FLIGHT`), is 503 so the job server retries. Every outcome
//! is counted in `jobproxy_callbacks_forwarded_total{outcome}`.
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use switchboard_bus::Bus;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::token::Token;

/// Forwards one node may have waiting for their owner at once.
const FORWARDS_IN_FLIGHT: usize = 1024;
/// How long a forward waits for the owner's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Asked at start on this node's own subject: an answer means another node has this id.
const PROBE: &[u8] = b"who";
/// Length of a token's text at the start of a forwarded message.
const TOKEN_LEN: usize = 32;

/// The subject node `node` answers forwarded callbacks on.
fn subject(node: u16) -> String {
    format!("jobproxy.callback.{node}")
}

/// The sending side: one per node with a shared bus.
pub(crate) struct Forwarder {
    bus: Bus,
    slots: Semaphore,
}

impl Forwarder {
    /// Forwards through `bus`.
    pub fn new(bus: Bus) -> Self {
        Self { bus, slots: Semaphore::new(FORWARDS_IN_FLIGHT) }
    }

    /// Forwards a callback for `token` (of another node) and answers as its owner did.
    pub async fn forward(&self, token: Token, body: Bytes) -> Response {
        let owner = token.node();
        let Ok(_slot) = self.slots.try_acquire() else {
            return outcome("shed", StatusCode::SERVICE_UNAVAILABLE, owner);
        };
        let mut message = BytesMut::with_capacity(TOKEN_LEN + body.len());
        message.extend_from_slice(token.to_string().as_bytes());
        message.extend_from_slice(&body);
        drop(body);
        let reply = self.bus.request(&subject(owner), message.freeze(), FORWARD_TIMEOUT).await;
        match reply {
            Ok(status) => {
                let status = std::str::from_utf8(&status)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                outcome("forwarded", status, owner)
            }
            Err(switchboard_bus::Error::NoResponders(_)) => {
                outcome("owner_gone", StatusCode::NOT_FOUND, owner)
            }
            Err(e) => {
                tracing::warn!(token = %switchboard_core::redact::token(token), owner, error = %switchboard_core::describe_error(&e), "forwarding a callback failed");
                outcome("failed", StatusCode::SERVICE_UNAVAILABLE, owner)
            }
        }
    }
}

fn outcome(label: &'static str, status: StatusCode, owner: u16) -> Response {
    metrics::counter!("jobproxy_callbacks_forwarded_total", "outcome" => label).increment(1);
    tracing::debug!(owner, outcome = label, status = status.as_u16(), "callback forwarded");
    let body = serde_json::json!({ "outcome": label, "owner": owner, "status": status.as_u16() });
    (status, Json(body)).into_response()
}

/// Checks that no other node answers on `node`'s subject, then answers forwarded callbacks for
/// `proxy`'s tokens until `stopped` (after the drain: held requests still get their reports).
///
/// # Errors
/// Another node runs with the same id, or the bus refuses the subscription.
pub(crate) async fn serve(
    bus: &Bus,
    proxy: Arc<Proxy>,
    stopped: CancellationToken,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let node = proxy.waiters.node();
    let subject = subject(node);
    if bus.request(&subject, Bytes::from_static(PROBE), Duration::from_millis(500)).await.is_ok() {
        return Err(crate::Error::config(format!(
            "--node-id {node} is already used by another proxy on this bus; give each node its own"
        )));
    }
    let mut requests = bus.subscribe(&subject).await?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => break },
                () = stopped.cancelled() => break,
            };
            let status = if message.payload.as_ref() == PROBE {
                StatusCode::OK
            } else {
                let token = message
                    .payload
                    .get(..TOKEN_LEN)
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<Token>().ok());
                match token {
                    Some(token) if token.node() == node => {
                        let body = message.payload.slice(TOKEN_LEN..);
                        crate::callback::deliver(&proxy, token, body).status()
                    }
                    _ => StatusCode::BAD_REQUEST,
                }
            };
            if message.expects_reply() {
                let _ = message.respond(Bytes::from(status.as_u16().to_string())).await;
            }
        }
    }))
}
