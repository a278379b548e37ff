//! What travels on the bus from gateways to status services: batches of EVEN/ODD reports on the
//! durable stream [`STREAM`], subject [`SUBJECT`], encoded as the `ReportBatch` protobuf.
//!
//! The stream keeps reports longer than the 3-minute window so a status replica that restarts
//! can be rebuilt from its store snapshot plus the reports it had not yet covered.
use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use switchboard_bus::{Bytes, StreamConfig};

use crate::proto;

/// Bus subject gateways publish report batches on.
pub const SUBJECT: &str = "presence.reports";

/// Durable stream capturing [`SUBJECT`].
pub const STREAM: &str = "PRESENCE_REPORTS";

/// The stream's configuration: ten minutes of reports (window + restart slack), bounded size.
pub fn stream_config() -> StreamConfig {
    let mut cfg = StreamConfig::new(STREAM, [SUBJECT]);
    cfg.max_age = Some(Duration::from_secs(600));
    cfg.max_bytes = Some(1 << 30);
    cfg.max_messages = Some(2_000_000);
    cfg
}

/// One EVEN/ODD report: who, and when the gateway saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The client's UUID as a number.
    pub client: u128,
    /// When the gateway received the Pong, Unix ms.
    pub seen_ms: i64,
    /// EVEN or ODD (UNKNOWN is never reported).
    pub status: proto::Status,
}

/// A decoded batch with its trace context.
#[derive(Debug, Default)]
pub struct Batch {
    /// Publishing gateway.
    pub gateway_id: String,
    /// Per-gateway sequence number.
    pub batch_seq: u64,
    /// The reports; ones with a malformed client id are dropped (and counted) on decode.
    pub reports: Vec<Report>,
    /// W3C trace context of the publishing span.
    pub trace_context: HashMap<String, String>,
    /// Reports dropped on decode because their client id was not 16 bytes.
    pub malformed: usize,
}

impl Batch {
    /// Encodes for the bus.
    pub fn encode(&self) -> Bytes {
        let msg = proto::ReportBatch {
            gateway_id: self.gateway_id.clone(),
            batch_seq: self.batch_seq,
            reports: self
                .reports
                .iter()
                .map(|r| proto::StatusReport {
                    client_id: r.client.to_be_bytes().to_vec(),
                    seen_ms: r.seen_ms,
                    status: r.status.into(),
                })
                .collect(),
            trace_context: self.trace_context.clone(),
        };
        Bytes::from(msg.encode_to_vec())
    }

    /// Decodes a bus payload.
    ///
    /// # Errors
    /// The payload is not a `ReportBatch`.
    pub fn decode(payload: &[u8]) -> Result<Self, prost::DecodeError> {
        let msg = proto::ReportBatch::decode(payload)?;
        let mut malformed = 0;
        let reports = msg
            .reports
            .into_iter()
            .filter_map(|r| {
                let id = <[u8; 16]>::try_from(r.client_id.as_slice()).ok();
                let status = proto::Status::try_from(r.status).ok();
                match (id, status) {
                    (Some(id), Some(s @ (proto::Status::Even | proto::Status::Odd))) => {
                        Some(Report {
                            client: u128::from_be_bytes(id),
                            seen_ms: r.seen_ms,
                            status: s,
                        })
                    }
                    _ => {
                        malformed += 1;
                        None
                    }
                }
            })
            .collect();
        Ok(Self {
            gateway_id: msg.gateway_id,
            batch_seq: msg.batch_seq,
            reports,
            trace_context: msg.trace_context,
            malformed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_bad_reports_are_dropped() {
        let batch = Batch {
            gateway_id: "g1".into(),
            batch_seq: 7,
            reports: vec![
                Report { client: u128::MAX - 3, seen_ms: 42, status: proto::Status::Odd },
                Report { client: 1, seen_ms: 43, status: proto::Status::Even },
            ],
            trace_context: HashMap::from([("traceparent".into(), "x".into())]),
            malformed: 0,
        };
        let back = Batch::decode(&batch.encode()).unwrap();
        assert_eq!(back.reports, batch.reports);
        assert_eq!(back.batch_seq, 7);
        assert_eq!(back.trace_context["traceparent"], "x");

        let bad = proto::ReportBatch {
            reports: vec![
                proto::StatusReport { client_id: vec![1, 2, 3], seen_ms: 1, status: 1 },
                proto::StatusReport { client_id: vec![0; 16], seen_ms: 1, status: 0 },
                proto::StatusReport { client_id: vec![0; 16], seen_ms: 1, status: 9 },
                proto::StatusReport { client_id: vec![0; 16], seen_ms: 1, status: 2 },
            ],
            ..Default::default()
        };
        let back = Batch::decode(&bad.encode_to_vec()).unwrap();
        assert_eq!(back.reports.len(), 1);
        assert_eq!(back.malformed, 3);
        assert!(Batch::decode(b"\xff\xff\xff").is_err());
    }
}
