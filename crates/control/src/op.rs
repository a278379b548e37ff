//! The five operations an agent executes, and their validation.
//!
//! Commands arrive from the network, so they are untrusted: [`Op::from_wire`] is the only way
//! to turn a wire [`proto::Command`] into an [`Op`], and it checks every argument against
//! [`Limits`]. Nothing outside these five variants can ever be executed.
use std::fmt;

use crate::proto::{self, RefusalCode, command};

/// Longest `calculate` message anything in this service accepts, in bytes. The one source
/// of every size limit of the console↔agent path: the ceiling of the agent's
/// `--max-msg-bytes`, the console's own check, the gRPC message caps on both ends
/// ([`MAX_WIRE_BYTES`]) and the console's input line. Whatever one layer accepts, the next
/// accepts too, so a valid command can never break a session.
pub const MAX_MSG_BYTES: usize = 64 * 1024;

/// Room for everything around the message in one gRPC message: ids, agent name, state,
/// outcome codes and refusal reasons (all short and bounded by our own code).
const ENVELOPE_BYTES: usize = 4 * 1024;

/// Largest gRPC message either end sends or accepts: any command or reply that carries a
/// message of up to [`MAX_MSG_BYTES`] fits; anything bigger is not from a peer of ours.
pub const MAX_WIRE_BYTES: usize = MAX_MSG_BYTES + ENVELOPE_BYTES;

/// Parses `--max-msg-bytes`: 1 ..= [`MAX_MSG_BYTES`].
///
/// # Errors
/// Not a number, zero, or above the ceiling.
pub fn parse_max_msg_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{s:?} is not a byte count: {e}"))?;
    if (1..=MAX_MSG_BYTES).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be within 1..={MAX_MSG_BYTES} bytes; got {s}"))
    }
}

/// Bounds applied to every incoming command's arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest accepted `x` (seconds of simulated work) for `calculate`.
    pub max_x: f64,
    /// Longest accepted `msg`, in bytes (UTF-8).
    pub max_msg_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_x: 3600.0, max_msg_bytes: 1024 }
    }
}

/// Ceiling of `--max-x`: about 31 years, far beyond any real job yet well inside what a
/// timer can represent (a bigger `x` would overflow the sleep).
pub const MAX_X_CEILING: f64 = 1e9;

/// Parses `--max-x`: a finite number of seconds within `0..=MAX_X_CEILING`.
///
/// # Errors
/// Not a number, not finite, negative or above the ceiling.
pub fn parse_max_x(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=MAX_X_CEILING).contains(&x) {
        Ok(x)
    } else {
        Err(format!("must be finite, within 0..={MAX_X_CEILING} seconds; got {s}"))
    }
}

/// A validated operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Become ready.
    Start,
    /// Become unready.
    Stop,
    /// Cancel work and exit cleanly.
    Terminate,
    /// Answer the agent's Unix time (ready only).
    Ping,
    /// Simulate `x` seconds of work, then print `msg` (ready only).
    Calculate {
        /// Seconds of simulated work: finite, within `0..=Limits::max_x`.
        x: f64,
        /// Printable text, at most `Limits::max_msg_bytes` bytes.
        msg: String,
    },
}

impl Op {
    /// Short name, used in logs, metrics labels and console output.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Terminate => "terminate",
            Op::Ping => "ping",
            Op::Calculate { .. } => "calculate",
        }
    }

    /// Validates an untrusted wire command.
    ///
    /// # Errors
    /// A [`Refusal`] naming what is wrong: no known operation, or an argument out of bounds.
    pub fn from_wire(op: Option<command::Op>, limits: &Limits) -> Result<Op, Refusal> {
        match op {
            None => Err(Refusal::new(
                RefusalCode::UnknownCommand,
                "unknown command: expected start, stop, terminate, ping or calculate",
            )),
            Some(command::Op::Start(_)) => Ok(Op::Start),
            Some(command::Op::Stop(_)) => Ok(Op::Stop),
            Some(command::Op::Terminate(_)) => Ok(Op::Terminate),
            Some(command::Op::Ping(_)) => Ok(Op::Ping),
            Some(command::Op::Calculate(c)) => Op::calculate(c.x, c.msg, limits),
        }
    }

    /// Builds a checked `calculate`.
    ///
    /// # Errors
    /// `x` is not finite, negative or above `limits.max_x`; `msg` is too long or holds
    /// control characters.
    pub fn calculate(x: f64, msg: String, limits: &Limits) -> Result<Op, Refusal> {
        if !x.is_finite() {
            return Err(Refusal::invalid(format!("x must be a finite number, got {x}")));
        }
        if x < 0.0 || x > limits.max_x {
            return Err(Refusal::invalid(format!(
                "x must be within 0..={} seconds, got {x}",
                limits.max_x
            )));
        }
        if msg.len() > limits.max_msg_bytes {
            return Err(Refusal::invalid(format!(
                "msg is {} bytes, the limit is {}",
                msg.len(),
                limits.max_msg_bytes
            )));
        }
        // Control characters could rewrite the operator's terminal (ANSI escapes) or forge
        // log lines (newlines); printable text is all a message needs.
        if let Some(c) = msg.chars().find(|c| c.is_control()) {
            return Err(Refusal::invalid(format!(
                "msg must be printable text, found control character U+{:04X}",
                u32::from(c)
            )));
        }
        Ok(Op::Calculate { x, msg })
    }

    /// The wire form of this operation.
    pub fn to_wire(&self) -> command::Op {
        match self {
            Op::Start => command::Op::Start(proto::Start {}),
            Op::Stop => command::Op::Stop(proto::Stop {}),
            Op::Terminate => command::Op::Terminate(proto::Terminate {}),
            Op::Ping => command::Op::Ping(proto::Ping {}),
            Op::Calculate { x, msg } => {
                command::Op::Calculate(proto::Calculate { x: *x, msg: msg.clone() })
            }
        }
    }
}

/// Why an agent did not execute a command: a code for programs, a reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable class.
    pub code: RefusalCode,
    /// Human-readable explanation.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }

    /// An invalid-argument refusal.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(RefusalCode::InvalidArgument, reason)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_str_name().trim_start_matches("REFUSAL_CODE_").to_lowercase();
        write!(f, "refused ({code}): {}", self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(x: f64, msg: &str) -> Result<Op, Refusal> {
        Op::from_wire(
            Some(command::Op::Calculate(proto::Calculate { x, msg: msg.into() })),
            &Limits::default(),
        )
    }

    #[test]
    fn hostile_arguments_are_refused_with_reasons() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 3600.5, f64::MAX] {
            let r = calc(x, "m").unwrap_err();
            assert_eq!(r.code, RefusalCode::InvalidArgument, "{x}");
            assert!(r.reason.contains("x must be"), "{r}");
        }
        let r = calc(1.0, &"a".repeat(1025)).unwrap_err();
        assert!(r.reason.contains("1025 bytes"), "{r}");
        let r = calc(1.0, "\u{1b}[2Jgotcha").unwrap_err();
        assert!(r.reason.contains("U+001B"), "{r}");
        let r = calc(1.0, "line\nforged").unwrap_err();
        assert!(r.reason.contains("U+000A"), "{r}");
    }

    #[test]
    fn valid_arguments_pass_unchanged() {
        assert_eq!(calc(0.0, "").unwrap(), Op::Calculate { x: 0.0, msg: String::new() });
        assert_eq!(
            calc(3600.0, "héllo wörld ✓").unwrap(),
            Op::Calculate { x: 3600.0, msg: "héllo wörld ✓".into() }
        );
        assert!(calc(1.0, &"a".repeat(1024)).is_ok());
    }

    #[test]
    fn empty_command_is_unknown() {
        let r = Op::from_wire(None, &Limits::default()).unwrap_err();
        assert_eq!(r.code, RefusalCode::UnknownCommand);
        assert_eq!(r.to_string().split(':').next(), Some("refused (unknown_command)"));
    }

    proptest::proptest! {
        /// Fuzz: any x and any text are either accepted exactly when valid, or refused with
        /// a reason — never a panic.
        #[test]
        fn arbitrary_calculate_is_accepted_iff_valid(
            x in proptest::num::f64::ANY,
            msg in proptest::prelude::any::<String>(),
        ) {
            let limits = Limits { max_x: 100.0, max_msg_bytes: 16 };
            let valid = x.is_finite() && (0.0..=100.0).contains(&x) && msg.len() <= 16
                && !msg.chars().any(char::is_control);
            match Op::calculate(x, msg, &limits) {
                Ok(_) => proptest::prop_assert!(valid),
                Err(r) => proptest::prop_assert!(!valid && !r.reason.is_empty()),
            }
        }
    }

    #[test]
    fn wire_round_trip() {
        for op in [
            Op::Start,
            Op::Stop,
            Op::Terminate,
            Op::Ping,
            Op::Calculate { x: 2.5, msg: "hi".into() },
        ] {
            assert_eq!(Op::from_wire(Some(op.to_wire()), &Limits::default()).unwrap(), op);
        }
    }
}
