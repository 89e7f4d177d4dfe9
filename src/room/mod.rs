//! Rooms: one actor per awake thread of a workspace, owning its agent session, its room log and
//! the broadcast to everyone connected. A workspace's awake threads share its sandbox and its
//! ownership lease.
//!
//! - `registry`: get-or-wake under the workspace's lease, what a workspace's threads share, the
//!   sleep handshake, calls with deadlines, thread-list pulses.
//! - `handle`: the cheap handle, mailbox commands, errors, subscriptions.
//! - `actor`: the select loop; it never awaits the network or the database itself.
//! - `writer`: the room-log writer task (seqs, persist, then broadcast; idempotent retries).
//! - `messages`: what the actor's tasks and its writer report back to it.
//! - `actor/turns`: prompts, the queue, the turn state machine, the agent session.
//! - `actor/permissions`: the agent's permission requests, first answer wins.
//! - `presence`: who is in the room, ephemeral and coalesced.
//! - `actor/recover`: what a previous run left in flight.
//!
//! The actor's parts are its children: they extend it without importing it back.

mod action;
mod actor;
mod handle;
mod messages;
mod presence;
mod registry;
mod writer;

pub use action::Action;
pub use handle::{Live, LiveEntry, RoomError, RoomHandle, Subscription};
pub use registry::{CALL_DEADLINE, Registry, RoomDeps};

/// Which room: a thread of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    pub workspace: String,
    pub thread: String,
}

/// The sandbox-agent session of a workspace's first thread (its one session before threads).
pub fn first_session_id(workspace_id: &str) -> String {
    format!("{workspace_id}/default")
}

/// The sandbox-agent session of a thread made later.
pub fn session_id_of(workspace_id: &str, thread_id: &str) -> String {
    format!("{workspace_id}/{thread_id}")
}
