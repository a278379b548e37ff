//! The operator console: executes typed or scripted commands against the fleet and prints
//! every reply.
//!
//! A command waits for each target's first reply (bounded by the reply timeout), so scripts
//! run in order. A calculation's completion arrives later: a watcher task prints it when it
//! comes, and `wait` (or the end of a script) waits for those watchers.
mod input;
mod line;

use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio_util::task::TaskTracker;

use crate::fleet::Fleet;
use crate::op::{Limits, Op, Refusal};
use crate::proto::{AgentState, RefusalCode, Reply, reply};

pub(crate) use input::{Input, Printer, Source, spawn_input};
use line::{HELP, Line, Target, parse, split_script};

/// Longest text from an agent the console prints; agents are untrusted.
const MAX_ECHO: usize = 2048;

/// Whether the console goes on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next line.
    Continue,
    /// The operator typed `quit`.
    Quit,
}

/// Console state: the fleet, the default target, and watchers of running calculations.
pub(crate) struct Console {
    fleet: Fleet,
    out: Printer,
    limits: Limits,
    target: Option<String>,
    reply_timeout: Duration,
    finish_timeout: Duration,
    watchers: TaskTracker,
}

impl Console {
    /// A console over `fleet`, printing to `out`.
    pub(crate) fn new(
        fleet: Fleet,
        out: Printer,
        reply_timeout: Duration,
        finish_timeout: Duration,
    ) -> Self {
        // The console only rejects what no agent could accept; agents apply their own limits.
        let limits = Limits { max_x: f64::MAX, max_msg_bytes: crate::op::MAX_MSG_BYTES };
        let watchers = TaskTracker::new();
        Self { fleet, out, limits, target: None, reply_timeout, finish_timeout, watchers }
    }

    /// Executes one input line (possibly several `;`-separated commands).
    pub(crate) async fn run_line(&mut self, input: &str) -> Flow {
        for command in split_script(input) {
            match parse(&command, &self.limits) {
                Err(e) => self.out.print(format!("error: {e}")),
                Ok(Line::Empty) => {}
                Ok(Line::Help) => self.out.print(HELP.to_owned()),
                Ok(Line::Agents) => self.print_agents(),
                Ok(Line::Use(target)) => self.choose(target),
                Ok(Line::Wait) => self.wait().await,
                Ok(Line::Quit) => return Flow::Quit,
                Ok(Line::Send { target, op }) => self.send(target, op).await,
            }
        }
        Flow::Continue
    }

    /// Waits (up to the finish timeout) for calculations started here to report.
    pub(crate) async fn wait(&self) {
        self.watchers.close();
        if tokio::time::timeout(self.finish_timeout, self.watchers.wait()).await.is_err() {
            self.out
                .print(format!("wait: calculations still running after {:?}", self.finish_timeout));
        }
        self.watchers.reopen();
    }

    fn print_agents(&self) {
        let agents = self.fleet.list();
        if agents.is_empty() {
            self.out.print("no agents attached".to_owned());
            return;
        }
        let mut text =
            format!("{:<24} {:<10} {:>8} {:>10}", "agent", "state", "pending", "attached");
        for a in agents {
            let mark = if self.target.as_deref() == Some(a.name.as_str()) { "*" } else { "" };
            text.push_str(&format!(
                "\n{:<24} {:<10} {:>8} {:>9}s",
                format!("{}{mark}", a.name),
                state_name(a.state),
                a.pending,
                a.attached_secs
            ));
        }
        self.out.print(text);
    }

    fn choose(&mut self, target: Option<String>) {
        match &target {
            None => self.out.print("commands now go to all agents".to_owned()),
            Some(n) if self.fleet.names().contains(n) => {
                self.out.print(format!("commands now go to {n}"));
            }
            Some(n) => self.out.print(format!("commands now go to {n} (not attached yet)")),
        }
        self.target = target;
    }

    async fn send(&self, target: Target, op: Op) {
        let names = match target {
            Target::Agent(n) => vec![n],
            Target::All => self.fleet.names(),
            Target::Default => self.target.clone().map_or_else(|| self.fleet.names(), |n| vec![n]),
        };
        if names.is_empty() {
            self.out.print(format!("{}: no agents attached", op.name()));
            return;
        }
        let lines = join_all(names.into_iter().map(|n| self.exchange(n, &op))).await;
        self.out.print(lines.join("\n"));
    }

    /// Sends `op` to one agent and describes its first reply.
    async fn exchange(&self, name: String, op: &Op) -> String {
        let verb = op.name();
        let started = Instant::now();
        let mut ticket = match self.fleet.send(&name, op) {
            Ok(t) => t,
            Err(e) => return format!("[{name}] {verb} -> error: {e}"),
        };
        let head = format!("[{name}] {verb} #{}", ticket.id);
        let reply = match tokio::time::timeout(self.reply_timeout, ticket.replies.recv()).await {
            Err(_) => {
                // Nobody waits any more: drop the routing entry, or an agent that never
                // answers would grow its pending table without bound.
                self.fleet.forget(&name, ticket.id);
                return format!("{head} -> no reply within {:?}", self.reply_timeout);
            }
            Ok(None) => return format!("{head} -> agent disconnected before replying"),
            Ok(Some(r)) => r,
        };
        metrics::histogram!("control_server_round_trip_seconds", "command" => verb)
            .record(started.elapsed().as_secs_f64());
        if matches!(reply.outcome, Some(reply::Outcome::Accepted(_))) {
            let out = self.out.clone();
            let watch_head = head.clone();
            self.watchers.spawn(async move {
                let line = match ticket.replies.recv().await {
                    Some(r) => describe(&r),
                    None => "lost: agent disconnected before finishing".to_owned(),
                };
                out.print(format!("{watch_head} -> {line}"));
            });
        }
        format!("{head} -> {}", describe(&reply))
    }
}

/// One reply as text. Everything that came from the agent is sanitised before printing.
pub(crate) fn describe(r: &Reply) -> String {
    let state = AgentState::try_from(r.state).unwrap_or(AgentState::Unspecified);
    match &r.outcome {
        None => "empty reply from agent".to_owned(),
        Some(reply::Outcome::Applied(_)) => format!("ok, {}", state_name(state)),
        Some(reply::Outcome::Pong(p)) => p.unix_time.to_string(),
        Some(reply::Outcome::Accepted(a)) => format!("accepted ({} in flight)", a.in_flight),
        Some(reply::Outcome::Finished(f)) => {
            format!("finished after {:.2}s: {}", f.seconds, sanitize(&f.msg))
        }
        Some(reply::Outcome::Cancelled(c)) => format!("cancelled: {}", sanitize(&c.reason)),
        Some(reply::Outcome::Refused(f)) => {
            let code = RefusalCode::try_from(f.code).unwrap_or(RefusalCode::Unspecified);
            Refusal::new(code, sanitize(&f.reason)).to_string()
        }
    }
}

pub(crate) fn state_name(s: AgentState) -> String {
    s.as_str_name().trim_start_matches("AGENT_STATE_").to_lowercase()
}

/// Escapes control characters and truncates, so an agent cannot drive the operator's
/// terminal (ANSI escapes) or forge output lines.
fn sanitize(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ECHO).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX_ECHO).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Finished, Refused};

    #[test]
    fn replies_read_well_and_cannot_inject_escapes() {
        let r = Reply {
            id: 1,
            state: AgentState::Ready as i32,
            outcome: Some(reply::Outcome::Finished(Finished {
                msg: "hi\u{1b}[2J\nthere".into(),
                seconds: 2.5,
            })),
        };
        assert_eq!(describe(&r), "finished after 2.50s: hi\\u{1b}[2J\\nthere");
        let r = Reply {
            id: 2,
            state: AgentState::Unready as i32,
            outcome: Some(reply::Outcome::Refused(Refused {
                code: RefusalCode::NotReady as i32,
                reason: "send start".into(),
            })),
        };
        assert_eq!(describe(&r), "refused (not_ready): send start");
        assert!(sanitize(&"x".repeat(5000)).ends_with('…'));
    }

    #[tokio::test]
    async fn a_reply_timeout_forgets_the_pending_command() {
        let fleet = Fleet::new(8);
        let _silent = fleet.attach("silent", AgentState::Ready).unwrap();
        let mut console = Console::new(
            fleet.clone(),
            Printer::Stdout,
            Duration::from_millis(20),
            Duration::from_secs(1),
        );
        for _ in 0..3 {
            assert!(console.run_line("ping").await == Flow::Continue);
        }
        assert_eq!(fleet.list()[0].pending, 0, "timed-out commands leave no routing entry");
    }
}
