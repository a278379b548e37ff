//! Validation of stream and consumer configurations.
//!
//! Both engines run these checks before anything else, so a bad configuration gets the same
//! clear error on `memory://` and `nats://` instead of an engine-specific server message.
use crate::subject::validate_pattern;
use crate::{ConsumerConfig, Error, MAX_WAIT, Result, StreamConfig};

/// Stream and durable names: letters, digits, `-`, `_` (NATS forbids `.`, `*`, `>`, spaces).
fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("{kind} name {name:?}: use letters, digits, '-' and '_'")))
    }
}

impl StreamConfig {
    /// Checks the name, subjects and limits.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::InvalidSubject`] naming the problem.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_name("stream", &self.name)?;
        if self.subjects.is_empty() {
            return Err(Error::config(format!("stream {}: no subjects", self.name)));
        }
        for s in &self.subjects {
            validate_pattern(s)?;
        }
        if self.max_messages == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::config(format!("stream {}: limits must be at least 1", self.name)));
        }
        if self.max_age.is_some_and(|a| a.is_zero()) {
            return Err(Error::config(format!("stream {}: max_age must be positive", self.name)));
        }
        // JetStream cannot switch dedup off (zero means its 2 min default): to store
        // repeats, publish without a msg_id instead.
        if self.duplicate_window.is_zero() {
            return Err(Error::config(format!(
                "stream {}: duplicate_window must be positive (publish without msg_id to skip dedup)",
                self.name
            )));
        }
        Ok(())
    }
}

impl ConsumerConfig {
    /// Checks the durable name, filter subject, ack wait and ack-pending limit.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::InvalidSubject`] naming the problem.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_name("durable", &self.durable)?;
        if self.ack_wait.is_zero() || self.max_ack_pending == 0 {
            return Err(Error::config(format!(
                "consumer {}: ack_wait and max_ack_pending must be positive",
                self.durable
            )));
        }
        if self.ack_wait > MAX_WAIT {
            return Err(Error::config(format!(
                "consumer {}: ack_wait {:?} exceeds {MAX_WAIT:?}",
                self.durable, self.ack_wait
            )));
        }
        if let Some(filter) = &self.filter_subject {
            validate_pattern(filter)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stream_validation_names_the_problem() {
        let bad = [
            StreamConfig::new("", ["a"]),
            StreamConfig::new("has space", ["a"]),
            StreamConfig::new("dotted.name", ["a"]),
            StreamConfig::new("S", Vec::<String>::new()),
            StreamConfig { max_messages: Some(0), ..StreamConfig::new("S", ["a"]) },
            StreamConfig { max_age: Some(Duration::ZERO), ..StreamConfig::new("S", ["a"]) },
            StreamConfig { duplicate_window: Duration::ZERO, ..StreamConfig::new("S", ["a"]) },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::Config(_))), "{cfg:?}");
        }
        let bad_subject = StreamConfig::new("S", ["a.>.b"]);
        assert!(matches!(bad_subject.validate(), Err(Error::InvalidSubject(_))));
        assert!(StreamConfig::new("EVENTS_v2-x", ["a.>", "b.*"]).validate().is_ok());
    }

    #[test]
    fn consumer_validation_names_the_problem() {
        let bad = [
            ConsumerConfig::new(""),
            ConsumerConfig::new("a.b"),
            ConsumerConfig { max_ack_pending: 0, ..ConsumerConfig::new("w") },
            ConsumerConfig { ack_wait: Duration::ZERO, ..ConsumerConfig::new("w") },
            ConsumerConfig { ack_wait: Duration::MAX, ..ConsumerConfig::new("w") },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::Config(_))), "{cfg:?}");
        }
        let bad_filter =
            ConsumerConfig { filter_subject: Some("a b".into()), ..ConsumerConfig::new("w") };
        assert!(matches!(bad_filter.validate(), Err(Error::InvalidSubject(_))));
        assert!(ConsumerConfig::new("worker-1").validate().is_ok());
    }
}
