//! One attach session of an agent: open the stream, say hello, then execute commands and
//! report results until the stream ends, `terminate`, or shutdown.
//!
//! The loop never awaits a calculation: `calculate` spawns a task and replies `Accepted` at
//! once, so the agent always accepts new messages. Replies for executed work are sent with
//! backpressure (they must not be lost); refusals are sent only if the outbound queue has
//! room, otherwise they are shed, counted and logged.
use std::time::{Duration, Instant};

use switchboard_core::Ctx;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Agent;
use crate::op::{Op, Refusal};
use crate::proto::control_client::ControlClient;
use crate::proto::{
    Accepted, AgentMessage, Applied, Cancelled, Command, Finished, Hello, Pong, RefusalCode,
    Refused, Reply, agent_message, reply,
};
use crate::state::Decision;
use crate::{Error, Result};

/// Outbound queue towards the console: replies wait here for the HTTP/2 stream.
const OUTBOUND: usize = 256;
/// How long a closing agent waits for the console to acknowledge the end of the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a session ended.
pub(super) enum SessionEnd {
    /// `terminate`: the agent exits.
    Terminated,
    /// Shutdown was requested.
    Shutdown,
    /// The stream broke or the console went away; reconnect.
    Lost(String),
    /// The console turned the attach down (full, duplicate name, handshake timed out):
    /// retry with a growing backoff, since it was never a working session.
    Refused(String),
}

impl Agent {
    /// Connects, attaches and serves one session.
    pub(super) async fn session(&mut self, ctx: &Ctx, health_key: &str) -> Result<SessionEnd> {
        let channel = self.endpoint.connect().await?;
        let mut client = ControlClient::new(channel)
            .max_decoding_message_size(crate::op::MAX_WIRE_BYTES)
            .max_encoding_message_size(crate::op::MAX_WIRE_BYTES);

        let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(OUTBOUND);
        let hello = Hello {
            name: self.name.clone(),
            state: self.machine.state().to_wire().into(),
            max_in_flight: self.args.max_in_flight,
        };
        // Cannot fail: the queue is fresh and its receiver is alive.
        let _ = out_tx.try_send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) });
        let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
        request.metadata_mut().insert("authorization", self.bearer.clone());

        let attach = tokio::time::timeout(self.args.connect_timeout, client.attach(request));
        let mut inbound = match attach.await {
            Err(_) => return Ok(SessionEnd::Refused("attach handshake timed out".into())),
            Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => {
                return Err(Error::Unauthenticated(s.message().to_owned()));
            }
            Ok(Err(s)) => {
                return Ok(SessionEnd::Refused(format!("attach refused: {}", s.message())));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        tracing::info!(agent = %self.name, server = %self.args.server, "attached");
        ctx.health.set_ready(health_key, true);

        loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => {
                    self.close(&out_tx, None).await;
                    drop(out_tx);
                    closed_by_console(&mut inbound).await;
                    return Ok(SessionEnd::Shutdown);
                }
                Some(mut r) = self.results_rx.recv() => {
                    r.state = self.machine.state().to_wire().into();
                    if out_tx.send(reply_message(r)).await.is_err() {
                        return Ok(SessionEnd::Lost("outbound stream closed".into()));
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(cmd)) => {
                        if let Some(id) = self.handle(cmd, &out_tx).await {
                            self.close(&out_tx, Some(id)).await;
                            drop(out_tx);
                            closed_by_console(&mut inbound).await;
                            return Ok(SessionEnd::Terminated);
                        }
                    }
                    Ok(None) => return Ok(SessionEnd::Lost("console closed the stream".into())),
                    Err(s) => return Ok(SessionEnd::Lost(format!("stream error: {}", s.message()))),
                },
            }
        }
    }

    /// Executes one command. Returns `Some(id)` when it was `terminate`.
    async fn handle(&mut self, cmd: Command, out: &mpsc::Sender<AgentMessage>) -> Option<u64> {
        let id = cmd.id;
        if !self.rate.try_take(Instant::now()) {
            let retry = self.rate.retry_after();
            let r = Refusal::new(
                RefusalCode::RateLimited,
                format!("more than {}/s commands; retry in {retry:?}", self.args.rate),
            );
            self.refuse(id, "unparsed", r, out);
            return None;
        }
        let op = match Op::from_wire(cmd.op, &self.limits) {
            Ok(op) => op,
            Err(r) => {
                self.refuse(id, "invalid", r, out);
                return None;
            }
        };
        let name = op.name();
        let outcome = match self.machine.decide(op) {
            Decision::Terminate => return Some(id),
            Decision::Refuse(r) => {
                self.refuse(id, name, r, out);
                return None;
            }
            Decision::Applied => reply::Outcome::Applied(Applied {}),
            Decision::Pong => reply::Outcome::Pong(Pong { unix_time: unix_now() }),
            Decision::Calculate { x, msg } => match self.spawn_calculation(id, x, msg) {
                Ok(in_flight) => reply::Outcome::Accepted(Accepted { in_flight }),
                Err(r) => {
                    self.refuse(id, name, r, out);
                    return None;
                }
            },
        };
        metrics::counter!("control_agent_commands_total", "command" => name, "outcome" => "executed")
            .increment(1);
        let state = self.machine.state().to_wire().into();
        // Executed work is never dropped silently: wait for room (backpressure to the console).
        let _ = out.send(reply_message(Reply { id, state, outcome: Some(outcome) })).await;
        None
    }

    /// Replies with a refusal if the outbound queue has room; sheds it otherwise.
    fn refuse(&self, id: u64, command: &'static str, r: Refusal, out: &mpsc::Sender<AgentMessage>) {
        let code = r.code.as_str_name();
        metrics::counter!("control_agent_commands_total", "command" => command, "outcome" => code)
            .increment(1);
        if matches!(r.code, RefusalCode::InvalidArgument | RefusalCode::UnknownCommand) {
            // Hostile or broken input is worth an operator's attention; the rate limit ahead
            // of validation bounds how many of these lines a flood can produce.
            tracing::warn!(agent = %self.name, id, command, reason = %r.reason, "command refused");
        } else {
            tracing::debug!(agent = %self.name, id, command, reason = %r.reason, "command refused");
        }
        let state = self.machine.state().to_wire().into();
        let refused = reply::Outcome::Refused(Refused { code: r.code.into(), reason: r.reason });
        if out.try_send(reply_message(Reply { id, state, outcome: Some(refused) })).is_err() {
            metrics::counter!("control_agent_shed_total", "queue" => "outbound").increment(1);
            tracing::warn!(agent = %self.name, id, "outbound queue full: refusal reply shed");
        }
    }

    /// Starts a calculation unless too many are in flight; returns the number in flight.
    fn spawn_calculation(&mut self, id: u64, x: f64, msg: String) -> Result<u32, Refusal> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Err(Refusal::new(
                RefusalCode::Busy,
                format!("{} calculations already in flight", self.args.max_in_flight),
            ));
        };
        let in_flight = self.args.max_in_flight - self.slots.available_permits() as u32;
        let work = self.work.clone();
        let results = self.results_tx.clone();
        let agent = self.name.clone();
        metrics::gauge!("control_agent_calculations_in_flight").increment(1.0);
        self.calcs.spawn(async move {
            let started = Instant::now();
            let outcome = tokio::select! {
                () = tokio::time::sleep(Duration::try_from_secs_f64(x).unwrap_or(Duration::MAX)) => {
                    // The product: the agent prints the message when the work is done.
                    println!("{msg}");
                    tracing::info!(%agent, id, x, "calculation finished");
                    reply::Outcome::Finished(Finished { msg, seconds: started.elapsed().as_secs_f64() })
                }
                () = work.cancelled() => {
                    tracing::info!(%agent, id, "calculation cancelled");
                    reply::Outcome::Cancelled(Cancelled { reason: "agent is terminating".into() })
                }
            };
            metrics::gauge!("control_agent_calculations_in_flight").decrement(1.0);
            // Never waits: the channel has one slot per permit (see `Agent::results_tx`).
            let _ = results.send(Reply { id, state: 0, outcome: Some(outcome) }).await;
            drop(permit);
        });
        Ok(in_flight)
    }

    /// Cancels calculations, forwards their results, then (for terminate) the final reply.
    async fn close(&mut self, out: &mpsc::Sender<AgentMessage>, terminate_id: Option<u64>) {
        self.stop_work().await;
        let state = self.machine.state().to_wire().into();
        while let Ok(mut r) = self.results_rx.try_recv() {
            r.state = state;
            let _ = out.send(reply_message(r)).await;
        }
        if let Some(id) = terminate_id {
            let applied = Some(reply::Outcome::Applied(Applied {}));
            let _ = out.send(reply_message(Reply { id, state, outcome: applied })).await;
            tracing::info!(agent = %self.name, "terminated by the console");
        }
    }
}

/// Waits (briefly) for the console to close its side after we closed ours, so our last
/// replies are flushed before the process exits.
async fn closed_by_console(inbound: &mut tonic::Streaming<Command>) {
    let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

fn reply_message(r: Reply) -> AgentMessage {
    AgentMessage { kind: Some(agent_message::Kind::Reply(r)) }
}

fn unix_now() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
