//! The console's view of attached agents: who is attached, in which state, and which
//! commands still wait for replies.
//!
//! Each agent gets a bounded command queue (full → the command is refused at the console as
//! busy, counted and logged) and a pending-reply table keyed by command id, so replies are
//! routed to whoever sent the command. Replies nobody waits for are counted and dropped.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::op::Op;
use crate::proto::{AgentState, Command, Reply, reply};

/// Replies one command can get: `Accepted` then `Finished`/`Cancelled` for a calculation.
const REPLIES_PER_COMMAND: usize = 2;

/// The attached agents. Cheap to clone; clones share the fleet.
#[derive(Clone)]
pub struct Fleet {
    // A std Mutex: held for map operations only, never across an await.
    members: Arc<Mutex<HashMap<String, Member>>>,
    next_id: Arc<AtomicU64>,
    next_session: Arc<AtomicU64>,
    count: watch::Sender<usize>,
    queue: usize,
}

struct Member {
    session: u64,
    commands: mpsc::Sender<Command>,
    pending: Pending,
    state: AgentState,
    attached_at: Instant,
    /// For read-only viewers: the last command sent and the last reply received, as text.
    last_command: Option<String>,
    last_reply: Option<String>,
}

/// Command id → where its replies go. Shared by the fleet (insert) and the session's reader
/// (route, then clear when the agent leaves so every waiter learns it at once).
pub(crate) type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>;

/// What a new session receives from [`Fleet::attach`].
pub(crate) struct Attachment {
    /// Identifies this session, so a stale session cannot detach a newer one.
    pub session: u64,
    /// Commands to stream to the agent.
    pub commands: mpsc::Receiver<Command>,
    /// Reply routing table of this agent.
    pub pending: Pending,
}

/// One attached agent, for `agents`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// Name the agent attached under.
    pub name: String,
    /// Its last reported state.
    pub state: AgentState,
    /// Commands still waiting for a final reply.
    pub pending: usize,
    /// Seconds since it attached.
    pub attached_secs: u64,
    /// The last command sent to it (`ping #7`).
    pub last_command: Option<String>,
    /// Its last reply, sanitised (`#7 1733550000`).
    pub last_reply: Option<String>,
}

/// A sent command: its id and the channel its replies arrive on.
#[derive(Debug)]
pub struct Ticket {
    /// Command id.
    pub id: u64,
    /// Replies; closed when the agent detaches.
    pub replies: mpsc::Receiver<Reply>,
}

/// Why a command could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No agent of that name is attached.
    #[error("no agent named `{0}` is attached")]
    Unknown(String),
    /// The agent's command queue is full (it is not reading fast enough).
    #[error("agent `{0}` has {1} commands queued; command shed")]
    Busy(String, usize),
}

impl Fleet {
    /// An empty fleet; each agent's command queue holds `queue` commands.
    pub fn new(queue: usize) -> Self {
        Self {
            members: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            next_session: Arc::new(AtomicU64::new(1)),
            count: watch::channel(0).0,
            queue: queue.max(1),
        }
    }

    /// Registers agent `name`, refusing a name that is already attached.
    pub(crate) fn attach(&self, name: &str, state: AgentState) -> Result<Attachment, String> {
        let mut members = self.lock();
        if members.contains_key(name) {
            return Err(format!("an agent named `{name}` is already attached"));
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let pending = Pending::default();
        let member = Member {
            session,
            commands: tx,
            pending: pending.clone(),
            state,
            attached_at: Instant::now(),
            last_command: None,
            last_reply: None,
        };
        members.insert(name.to_owned(), member);
        self.publish_count(members.len());
        Ok(Attachment { session, commands: rx, pending })
    }

    /// Removes agent `name` if `session` is still the attached one; wakes its waiters.
    pub(crate) fn detach(&self, name: &str, session: u64) {
        let mut members = self.lock();
        if members.get(name).is_some_and(|m| m.session == session) {
            if let Some(m) = members.remove(name) {
                lock(&m.pending).clear();
            }
            self.publish_count(members.len());
        }
    }

    /// Records the state an agent reported.
    pub(crate) fn set_state(&self, name: &str, session: u64, state: AgentState) {
        if let Some(m) = self.lock().get_mut(name).filter(|m| m.session == session) {
            m.state = state;
        }
    }

    /// Queues `op` for agent `name`.
    ///
    /// # Errors
    /// The agent is not attached, or its queue is full.
    pub fn send(&self, name: &str, op: &Op) -> Result<Ticket, SendError> {
        let mut members = self.lock();
        let m = members.get_mut(name).ok_or_else(|| SendError::Unknown(name.to_owned()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(REPLIES_PER_COMMAND);
        lock(&m.pending).insert(id, tx);
        let cmd = Command { id, op: Some(op.to_wire()) };
        if m.commands.try_send(cmd).is_err() {
            lock(&m.pending).remove(&id);
            metrics::counter!("control_server_shed_total", "queue" => "agent_commands")
                .increment(1);
            tracing::warn!(agent = name, command = op.name(), "agent command queue full: shed");
            return Err(SendError::Busy(name.to_owned(), self.queue));
        }
        metrics::counter!("control_server_commands_total", "command" => op.name()).increment(1);
        m.last_command = Some(format!("{} #{id}", op.name()));
        Ok(Ticket { id, replies: rx })
    }

    /// Records the reply an agent sent, for [`Fleet::publish_status`].
    pub(crate) fn note_reply(&self, name: &str, session: u64, reply: &Reply) {
        if let Some(m) = self.lock().get_mut(name).filter(|m| m.session == session) {
            m.last_reply = Some(format!("#{} {}", reply.id, crate::console::describe(reply)));
        }
    }

    /// Publishes the agents (name, state, last command and reply) as `control` in
    /// [`switchboard_core::status`], read when asked; the entry goes once the fleet is dropped.
    pub fn publish_status(&self) {
        let members = Arc::downgrade(&self.members);
        switchboard_core::status::provide("control", move || {
            let members = members.upgrade()?;
            let agents: Vec<_> = list(&members)
                .into_iter()
                .map(|a| {
                    serde_json::json!({
                        "name": a.name,
                        "state": crate::console::state_name(a.state),
                        "pending": a.pending,
                        "attached_secs": a.attached_secs,
                        "last_command": a.last_command,
                        "last_reply": a.last_reply,
                    })
                })
                .collect();
            Some(serde_json::json!({ "agents": agents }))
        });
    }

    /// Stops routing replies of command `id` to agent `name`'s waiter (it gave up).
    pub(crate) fn forget(&self, name: &str, id: u64) {
        if let Some(m) = self.lock().get(name) {
            lock(&m.pending).remove(&id);
        }
    }

    /// Names of the attached agents, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The attached agents, sorted by name.
    pub fn list(&self) -> Vec<AgentInfo> {
        list(&self.members)
    }

    /// Number of attached agents.
    pub(crate) fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `n` agents are attached or `deadline` passes; true if reached.
    pub async fn wait_for(&self, n: usize, deadline: std::time::Duration) -> bool {
        self.wait_until(|c| c >= n, deadline).await
    }

    /// Waits until the number of attached agents satisfies `pred` or `deadline` passes.
    pub(crate) async fn wait_until(
        &self,
        pred: impl Fn(usize) -> bool,
        deadline: std::time::Duration,
    ) -> bool {
        let mut rx = self.count.subscribe();
        let reached = rx.wait_for(|c| pred(*c));
        tokio::time::timeout(deadline, reached).await.is_ok_and(|r| r.is_ok())
    }

    fn publish_count(&self, n: usize) {
        self.count.send_replace(n);
        metrics::gauge!("control_server_agents_attached").set(n as f64);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Member>> {
        lock(&self.members)
    }
}

/// Routes `reply` to its waiter. Returns false if nobody waits for that id.
pub(crate) fn route(pending: &Pending, reply: Reply) -> bool {
    let last = !matches!(reply.outcome, Some(reply::Outcome::Accepted(_)));
    let mut table = lock(pending);
    let waiter = if last { table.remove(&reply.id) } else { table.get(&reply.id).cloned() };
    drop(table);
    match waiter {
        // The waiter may have given up (timeout); the reply is then simply not needed.
        Some(tx) => {
            let _ = tx.try_send(reply);
            true
        }
        None => false,
    }
}

/// The agents in `members`, sorted by name.
fn list(members: &Mutex<HashMap<String, Member>>) -> Vec<AgentInfo> {
    let mut v: Vec<AgentInfo> = lock(members)
        .iter()
        .map(|(name, m)| AgentInfo {
            name: name.clone(),
            state: m.state,
            pending: lock(&m.pending).len(),
            attached_secs: m.attached_at.elapsed().as_secs(),
            last_command: m.last_command.clone(),
            last_reply: m.last_reply.clone(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the maps stay consistent between operations.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64, outcome: reply::Outcome) -> Reply {
        Reply { id, state: 0, outcome: Some(outcome) }
    }

    #[tokio::test]
    async fn routes_replies_and_wakes_waiters_on_detach() {
        let fleet = Fleet::new(2);
        let mut a = fleet.attach("a", AgentState::Unready).unwrap();
        assert!(fleet.attach("a", AgentState::Unready).is_err(), "duplicate names are refused");
        assert!(fleet.wait_for(1, std::time::Duration::from_secs(1)).await);

        let mut t = fleet.send("a", &Op::Ping).unwrap();
        assert_eq!(a.commands.recv().await.unwrap().id, t.id);
        assert!(route(&a.pending, reply(t.id, reply::Outcome::Pong(Default::default()))));
        assert!(t.replies.recv().await.is_some());
        assert!(!route(&a.pending, reply(t.id, reply::Outcome::Pong(Default::default()))));

        let mut waiting = fleet.send("a", &Op::Ping).unwrap();
        let _queued = fleet.send("a", &Op::Ping).unwrap();
        assert_eq!(fleet.send("a", &Op::Ping).unwrap_err(), SendError::Busy("a".into(), 2));

        fleet.detach("a", a.session + 1); // a stale session id changes nothing
        assert_eq!(fleet.len(), 1);
        fleet.detach("a", a.session);
        assert_eq!(fleet.len(), 0);
        assert!(waiting.replies.recv().await.is_none(), "waiters learn the agent left");
        assert_eq!(fleet.send("a", &Op::Ping).unwrap_err(), SendError::Unknown("a".into()));
    }

    #[tokio::test]
    async fn the_status_shows_agents_with_their_last_command_and_reply() {
        let fleet = Fleet::new(2);
        fleet.publish_status();
        let a = fleet.attach("a", AgentState::Unready).unwrap();
        let t = fleet.send("a", &Op::Ping).unwrap();
        let mut pong = reply(t.id, reply::Outcome::Pong(Default::default()));
        pong.state = AgentState::Ready as i32;
        fleet.set_state("a", a.session, AgentState::Ready);
        fleet.note_reply("a", a.session, &pong);
        let status = switchboard_core::status::get("control").expect("published");
        let agent = &status["agents"][0];
        assert_eq!(agent["name"], "a");
        assert_eq!(agent["state"], "ready");
        assert_eq!(agent["last_command"], format!("ping #{}", t.id));
        assert_eq!(agent["last_reply"], format!("#{} 0", t.id));
        drop((a, t, fleet));
        assert_eq!(switchboard_core::status::get("control"), None, "gone with the fleet");
    }
}
