//! The agent's state machine: `unready` (initial) ⇄ `ready`, and `terminated` from anywhere.
//!
//! Pure and synchronous so it can be checked exhaustively (property tests below): the
//! session feeds it every validated [`Op`] and acts on the [`Decision`] it returns.
use crate::op::{Op, Refusal};
use crate::proto::{AgentState, RefusalCode};

/// Where an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Initial: only `start`, `stop` and `terminate` are executed.
    #[default]
    Unready,
    /// Data commands (`ping`, `calculate`) are executed too.
    Ready,
    /// `terminate` was received: the agent is closing; nothing more is executed.
    Terminated,
}

impl State {
    /// The wire form.
    pub fn to_wire(self) -> AgentState {
        match self {
            State::Unready => AgentState::Unready,
            State::Ready => AgentState::Ready,
            State::Terminated => AgentState::Terminated,
        }
    }
}

/// What the agent must do with a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A state change took effect; reply `Applied`.
    Applied,
    /// Reply with the current Unix time.
    Pong,
    /// Start the calculation (subject to the in-flight bound).
    Calculate {
        /// Seconds of simulated work.
        x: f64,
        /// Printed when done.
        msg: String,
    },
    /// Cancel running work, reply, close the session and exit.
    Terminate,
    /// Do nothing but reply with this refusal.
    Refuse(Refusal),
}

/// The state machine.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    state: State,
}

impl Machine {
    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Applies `op`, returning what to do.
    pub fn decide(&mut self, op: Op) -> Decision {
        if self.state == State::Terminated {
            return Decision::Refuse(Refusal::new(
                RefusalCode::Terminating,
                "agent is terminating; no further commands are executed",
            ));
        }
        match op {
            Op::Start => {
                self.state = State::Ready;
                Decision::Applied
            }
            Op::Stop => {
                self.state = State::Unready;
                Decision::Applied
            }
            Op::Terminate => {
                self.state = State::Terminated;
                Decision::Terminate
            }
            Op::Ping | Op::Calculate { .. } if self.state == State::Unready => {
                Decision::Refuse(Refusal::new(
                    RefusalCode::NotReady,
                    format!("agent is unready: send `start` before `{}`", op.name()),
                ))
            }
            Op::Ping => Decision::Pong,
            Op::Calculate { x, msg } => Decision::Calculate { x, msg },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Start),
            4 => Just(Op::Stop),
            1 => Just(Op::Terminate),
            4 => Just(Op::Ping),
            4 => (0.0f64..10.0, "[a-z ]{0,8}").prop_map(|(x, msg)| Op::Calculate { x, msg }),
        ]
    }

    #[test]
    fn starts_unready_and_refuses_data_commands() {
        let mut m = Machine::default();
        assert_eq!(m.state(), State::Unready);
        let Decision::Refuse(r) = m.decide(Op::Ping) else { panic!("ping while unready ran") };
        assert_eq!(r.code, RefusalCode::NotReady);
        assert!(r.reason.contains("send `start`"), "{}", r.reason);
    }

    proptest! {
        /// Against a two-line model: data commands run iff the last state command was
        /// `start`; after `terminate` nothing runs; state commands are idempotent.
        #[test]
        fn follows_the_model(ops in proptest::collection::vec(any_op(), 0..64)) {
            let mut m = Machine::default();
            let mut ready = false;
            let mut terminated = false;
            for op in ops {
                let decision = m.decide(op.clone());
                if terminated {
                    prop_assert!(matches!(&decision, Decision::Refuse(r) if r.code == RefusalCode::Terminating));
                    prop_assert_eq!(m.state(), State::Terminated);
                    continue;
                }
                match op {
                    Op::Start => { ready = true; prop_assert_eq!(decision, Decision::Applied); }
                    Op::Stop => { ready = false; prop_assert_eq!(decision, Decision::Applied); }
                    Op::Terminate => { terminated = true; prop_assert_eq!(decision, Decision::Terminate); }
                    Op::Ping if ready => prop_assert_eq!(decision, Decision::Pong),
                    Op::Calculate { x, msg } if ready => {
                        prop_assert_eq!(decision, Decision::Calculate { x, msg });
                    }
                    Op::Ping | Op::Calculate { .. } => {
                        prop_assert!(matches!(&decision, Decision::Refuse(r) if r.code == RefusalCode::NotReady));
                    }
                }
                let expected = if terminated { State::Terminated } else if ready { State::Ready } else { State::Unready };
                prop_assert_eq!(m.state(), expected);
            }
        }
    }
}
