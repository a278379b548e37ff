//! One conformance suite, run against both engines.
//!
//! Every case is an `async fn(Bus)`; the `conformance!` macro instantiates it once with a
//! fresh `Bus::memory()` and once with a `Bus` on its own throw-away `nats-server -js`.
//! NATS-only crash cases (a killed worker process, a killed server) are in `crash.rs`.
#[path = "conformance/crash.rs"]
mod crash;
#[path = "conformance/durable.rs"]
mod durable;
#[path = "conformance/pubsub.rs"]
mod pubsub;
#[path = "conformance/support.rs"]
mod support;

use durable::*;
use pubsub::*;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(switchboard_bus::Bus::memory()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    let server = switchboard_testkit::NatsServer::start();
                    let bus = switchboard_bus::Bus::connect(&server.url).await?;
                    super::$case(bus).await
                }
            )*
        }
    };
}

conformance!(
    pubsub_wildcards,
    queue_group_splits,
    request_reply,
    invalid_subjects_are_rejected,
    durable_publish_then_consume,
    unacked_is_redelivered_after_ack_wait,
    nak_redelivers_after_delay,
    shared_durable_splits_without_duplicates,
    max_ack_pending_applies_backpressure,
    dedup_by_msg_id,
    deliver_from_new_and_time,
    bounded_stream_discards_oldest,
    fetch_wakes_on_publish,
    rebinding_keeps_position_and_start,
);
