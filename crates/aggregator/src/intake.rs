//! Frames in, reports out: applies each frame to the [`Tally`] and turns every closed window
//! into a queued report.
//!
//! The intake outlives connections: associations, the open window and queued reports survive
//! a reconnect. It is owned by the reading task alone, so the hot path takes no lock; metric
//! handles are resolved once here instead of per message.
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, counter, gauge, histogram};
use switchboard_core::Health;
use tokio_tungstenite::tungstenite::Message;

use crate::associations::Update;
use crate::outbox::Outbox;
use crate::protocol::{self, AssociationList, Frame, FrameLimits};
use crate::window::{Limits, Recorded, Schedule, Tally};

/// Malformed frames logged at `warn` per window; the rest only at `debug` (the counter has all).
const WARN_PER_WINDOW: u32 = 10;

/// Readiness component that is not ready while an association list has been lost: every count
/// for the children it named would silently go to "unknown".
pub(crate) const ASSOCIATIONS_COMPONENT: &str = "aggregator-associations";

/// Cached metric handles of the hot path.
struct Meters {
    counted: Counter,
    pending: Counter,
    shed: Counter,
    associations: Counter,
    children: Gauge,
    pending_pairs: Gauge,
}

impl Meters {
    fn new() -> Self {
        Self {
            counted: counter!("aggregator_messages_total", "outcome" => "counted"),
            pending: counter!("aggregator_messages_total", "outcome" => "pending"),
            shed: counter!("aggregator_messages_total", "outcome" => "shed"),
            associations: counter!("aggregator_associations_total"),
            children: gauge!("aggregator_children"),
            pending_pairs: gauge!("aggregator_pending_pairs"),
        }
    }
}

/// The aggregator's state across connections.
pub(crate) struct Intake {
    tally: Tally,
    schedule: Schedule,
    outbox: Arc<Outbox>,
    frame_limits: FrameLimits,
    /// Where a lost association list turns readiness off (until the next list is applied).
    health: Option<Health>,
    meters: Meters,
    malformed_this_window: u32,
    shed_this_window: u64,
    /// Message outcomes not yet added to the metrics (counted, pending): the reader publishes
    /// once per batch of frames instead of touching shared atomics per message.
    unpublished: (u64, u64),
}

impl Intake {
    /// A fresh intake; windows follow `schedule`, reports go to `outbox`.
    pub(crate) fn new(
        limits: Limits,
        frame_limits: FrameLimits,
        schedule: Schedule,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            tally: Tally::new(limits),
            schedule,
            outbox,
            frame_limits,
            health: None,
            meters: Meters::new(),
            malformed_this_window: 0,
            shed_this_window: 0,
            unpublished: (0, 0),
        }
    }

    /// The same intake, keeping [`ASSOCIATIONS_COMPONENT`] in `health` (ready now).
    pub(crate) fn with_health(self, health: &Health) -> Self {
        health.set_ready(ASSOCIATIONS_COMPONENT, true);
        Self { health: Some(health.clone()), ..self }
    }

    /// The frame size limits, for the websocket layer to derive its own from.
    pub(crate) fn frame_limits(&self) -> FrameLimits {
        self.frame_limits
    }

    /// The outbox reports are queued in.
    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Time until the open window must be closed.
    pub(crate) fn until_due(&self) -> Duration {
        self.schedule.until_due()
    }

    /// Closes the open window if it is due; call when [`Self::until_due`] has elapsed.
    pub(crate) fn close_if_due(&mut self) {
        if let Some(window) = self.schedule.close_due() {
            self.close(window);
        }
    }

    /// Closes the open window now, even if it has not ended (shutdown flush).
    pub(crate) fn close_now(&mut self) {
        let window = self.schedule.open_window();
        self.close(window);
    }

    /// Applies one websocket message. Never fails: bad frames are counted and logged.
    #[inline]
    pub(crate) fn on_message(&mut self, msg: &Message) {
        match msg {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(b) => {
                self.malformed("binary", &format!("binary frame of {} bytes", b.len()))
            }
            // Pings are answered by tungstenite; close ends the stream right after.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }

    /// Applies one text frame.
    #[inline]
    pub(crate) fn on_text(&mut self, text: &str) {
        match protocol::parse(text, &self.frame_limits) {
            Ok(Frame::Message { source, destination }) => {
                match self.tally.record(source, destination) {
                    Recorded::Counted => self.unpublished.0 += 1,
                    Recorded::Pending => self.unpublished.1 += 1,
                    Recorded::Shed => self.shed(),
                }
            }
            Ok(Frame::Associations(list)) => self.associate(&list),
            Err(e @ protocol::FrameError::AssociationsOversized(_)) => {
                self.associations_lost(e.reason(), &switchboard_core::describe_error(&e));
            }
            Err(e) => self.malformed(e.reason(), &switchboard_core::describe_error(&e)),
        }
    }

    /// The websocket layer refused a frame larger than [`FrameLimits::websocket_bytes`] (the
    /// connection is lost with it). Only an association list can be that large.
    pub(crate) fn frame_too_large(&mut self, error: &dyn std::fmt::Display) {
        self.associations_lost("frame_too_large", &error.to_string());
    }

    /// An association list was refused: every count for its children would be lost without a
    /// trace, so this is an error, a metric and `/readyz` not ready until a list is applied.
    fn associations_lost(&mut self, reason: &'static str, detail: &str) {
        counter!("aggregator_association_lists_lost_total", "reason" => reason).increment(1);
        if let Some(health) = &self.health {
            health.set_ready(ASSOCIATIONS_COMPONENT, false);
        }
        tracing::error!(
            reason,
            detail,
            limit_bytes = self.frame_limits.association_bytes,
            "association list lost: messages naming its children cannot be counted (raise --max-children if the server really has that many)"
        );
    }

    /// Adds the message counts read since the last call to the metrics.
    pub(crate) fn publish(&mut self) {
        let (counted, pending) = std::mem::take(&mut self.unpublished);
        self.meters.counted.increment(counted);
        self.meters.pending.increment(pending);
    }

    fn associate(&mut self, list: &AssociationList<'_>) {
        let (mut applied, mut full) = (0u64, 0u64);
        let skipped = list.for_each(|parent, child| {
            applied += 1;
            if self.tally.associate(parent, child) == Update::Full {
                full += 1;
            }
        });
        self.meters.associations.increment(applied);
        self.meters.children.set(self.tally.children() as f64);
        if let Some(health) = &self.health {
            health.set_ready(ASSOCIATIONS_COMPONENT, true);
        }
        if skipped > 0 {
            self.malformed(
                "invalid_association",
                &format!("{skipped} association entries skipped"),
            );
        }
        if full > 0 {
            counter!("aggregator_associations_rejected_total").increment(full);
            tracing::warn!(
                rejected = full,
                children = self.tally.children(),
                "association cap reached; updates for new children or parents rejected"
            );
        }
    }

    fn shed(&mut self) {
        self.meters.shed.increment(1);
        if self.shed_this_window == 0 {
            tracing::warn!(
                pending_pairs = self.tally.pending_pairs(),
                "pending-pair cap reached; shedding messages with unknown children"
            );
        }
        self.shed_this_window += 1;
    }

    fn malformed(&mut self, reason: &'static str, detail: &str) {
        counter!("aggregator_frames_malformed_total", "reason" => reason).increment(1);
        self.malformed_this_window += 1;
        if self.malformed_this_window <= WARN_PER_WINDOW {
            tracing::warn!(reason, detail, "skipping malformed frame");
        } else {
            tracing::debug!(reason, detail, "skipping malformed frame");
        }
    }

    fn close(&mut self, window: i64) {
        let started = std::time::Instant::now();
        self.publish();
        let flush = self.tally.flush();
        let text = protocol::encode_report(&flush.rows);
        let messages: u64 = flush.rows.iter().map(|r| r.2).sum();
        counter!("aggregator_unresolved_resolved_late_total").increment(flush.resolved_late);
        counter!("aggregator_unresolved_carried_total").increment(flush.carried);
        counter!("aggregator_unresolved_dropped_total").increment(flush.dropped);
        counter!("aggregator_windows_total").increment(1);
        self.meters.pending_pairs.set(self.tally.pending_pairs() as f64);
        if flush.dropped > 0 {
            tracing::warn!(
                window,
                dropped = flush.dropped,
                "messages with children unknown for two windows dropped"
            );
        }
        tracing::info!(
            window,
            pairs = flush.rows.len(),
            messages,
            carried = flush.carried,
            malformed = self.malformed_this_window,
            shed = self.shed_this_window,
            "window closed"
        );
        if let Some(old) = self.outbox.push(window, text) {
            counter!("aggregator_reports_dropped_total").increment(1);
            tracing::warn!(window = old.window, "outbox full; dropped the oldest unsent report");
        }
        histogram!("aggregator_flush_seconds").record(started.elapsed().as_secs_f64());
        self.malformed_this_window = 0;
        self.shed_this_window = 0;
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::ManualClock;

    use super::*;

    const P: &str = "11111111-1111-4111-8111-111111111111";
    const Q: &str = "22222222-2222-4222-8222-222222222222";
    const A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
    const B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

    fn message(s: &str, d: &str) -> String {
        format!(
            r#"{{"source":"{s}","destination":"{d}","method":"GET","path":"/list","httpStatus":400}}"#
        )
    }

    #[test]
    fn frames_become_one_report_per_window_by_the_injected_clock() {
        let clock = ManualClock::new(60_000);
        let outbox = Arc::new(Outbox::new(8));
        let limits = Limits { max_children: 10, max_parents: 10, max_pending: 10 };
        let schedule = Schedule::new(Duration::from_secs(60), Arc::new(clock.clone()));
        let mut intake = Intake::new(limits, FrameLimits::new(4096, 10), schedule, outbox.clone());

        intake.on_text(&format!(" [{{\"parent\":\"{P}\",\"child\":\"{A}\"}}]\n"));
        intake.on_text(&message(A, A));
        intake.on_text(&message(A, B)); // B unknown yet
        intake.on_text("not json");
        intake.on_message(&Message::binary(vec![1, 2]));
        intake.on_text(&format!("\t[{{\"parent\":\"{Q}\",\"children\":\"{B}\"}}]"));
        intake.on_text(&message(B, A));

        clock.set(119_999);
        intake.close_if_due();
        assert!(outbox.front().is_none(), "window still open");
        clock.set(120_000);
        intake.close_if_due();
        let report = outbox.front().expect("one report");
        assert_eq!(report.window, 60_000);
        let got: serde_json::Value = serde_json::from_str(&report.text).unwrap();
        let mut rows = got.as_array().unwrap().clone();
        rows.sort_by_key(|r| {
            r["source"].as_str().unwrap().to_owned() + r["destination"].as_str().unwrap()
        });
        assert_eq!(
            serde_json::Value::Array(rows),
            serde_json::json!([
                {"source": P, "destination": P, "count": 1},
                {"source": P, "destination": Q, "count": 1},
                {"source": Q, "destination": P, "count": 1},
            ])
        );
        outbox.ack(report.seq);

        intake.on_text(&message(A, A));
        intake.close_now(); // shutdown flush of a partial window
        assert_eq!(
            &*outbox.front().unwrap().text,
            &format!(r#"[{{"source":"{P}","destination":"{P}","count":1}}]"#)
        );
    }
}
