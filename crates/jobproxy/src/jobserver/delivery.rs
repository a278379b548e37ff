//! Callback delivery of the simulator: POST the report, retry with exponential backoff on
//! connection errors and 5xx, give up on 4xx (the receiver refused it; retrying cannot help).
//! Deliveries in flight are bounded by a semaphore so 10,000 finishing jobs do not open
//! 10,000 sockets at once.
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// The receiver answered 2xx.
    Accepted,
    /// The receiver answered 4xx.
    Refused,
    /// Every attempt failed, or shutdown interrupted the retries.
    GaveUp,
}

/// Sends callbacks.
pub(crate) struct Courier {
    pub client: reqwest::Client,
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub in_flight: Semaphore,
    pub shutdown: CancellationToken,
}

impl Courier {
    /// Delivers `body` to `url`.
    pub async fn deliver(&self, url: &str, body: Bytes) -> Delivered {
        let Ok(_permit) = self.in_flight.acquire().await else { return Delivered::GaveUp };
        let mut backoff = self.backoff;
        for attempt in 1..=self.attempts.max(1) {
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(self.timeout)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return self.done(Delivered::Accepted),
                Ok(r) if r.status().is_client_error() => {
                    tracing::info!(url, status = %r.status(), "callback refused by receiver");
                    return self.done(Delivered::Refused);
                }
                Ok(r) => tracing::warn!(url, attempt, status = %r.status(), "callback failed"),
                Err(e) => {
                    tracing::warn!(url, attempt, error = %switchboard_core::describe_error(&e), "callback failed")
                }
            }
            if attempt < self.attempts {
                metrics::counter!("jobserver_callback_retries_total").increment(1);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = self.shutdown.cancelled() => break,
                }
                backoff = backoff.saturating_mul(2);
            }
        }
        self.done(Delivered::GaveUp)
    }

    fn done(&self, d: Delivered) -> Delivered {
        let outcome = match d {
            Delivered::Accepted => "accepted",
            Delivered::Refused => "refused",
            Delivered::GaveUp => "gave_up",
        };
        metrics::counter!("jobserver_callbacks_total", "outcome" => outcome).increment(1);
        d
    }
}
