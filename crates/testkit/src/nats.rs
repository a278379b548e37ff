//! Throw-away nats-server (stub — implemented by the bus work).

/// A running nats-server with JetStream; killed and cleaned up on drop.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}
