//! What a session tells its owner, and how a turn ended: shared by the session and its connection.

use serde_json::Value;

use super::records::SessionEvent;

/// What a session tells its owner, in order. Events are persisted before they are announced.
#[derive(Debug, Clone)]
pub enum SessionNotice {
    Event(SessionEvent),
    /// The agent asks for permission; answer with [`Session::respond_permission`].
    PermissionRequested {
        request_id: String,
        /// The JSON-RPC id the agent gave it (kept to answer it after a restart).
        rpc_id: Value,
        params: Value,
    },
    /// Permission requests that can no longer be answered (their connection is gone).
    PermissionsCancelled(Vec<String>),
    /// Something arrived from sandbox-agent that is not a JSON-RPC envelope.
    Malformed(String),
    /// The event stream skipped envelopes that sandbox-agent no longer held.
    StreamGap {
        last_seen: u64,
        resumed_at: u64,
    },
    /// The event stream skipped envelopes, and resuming it got them back.
    StreamHealed {
        recovered: u64,
    },
    /// The live connection is gone; the next action restores the session on a new one.
    ConnectionLost(String),
    /// The agent's process exited (sandbox-agent's `_adapter/agent_exited`): its connection is
    /// gone, and the next action starts it again on a new one.
    AgentExited,
    /// The agent's output cannot be stored now (the database is down): it waits, and so does the
    /// room's log.
    StorageDown,
    /// The agent refused, on a session opened anew, an option the room had chosen.
    OptionRefused {
        config_id: String,
        value: String,
    },
    /// The session was restored on a new connection; the next prompt carries replayed history.
    Restored {
        replayed_events: usize,
        /// The agent reopened its own session (`session/load`): it remembers everything.
        full_memory: bool,
    },
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEnd {
    pub stop_reason: String,
}
