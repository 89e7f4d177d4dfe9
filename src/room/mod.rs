//! Rooms: one actor per awake workspace, owning its agent session, its room log and the broadcast
//! to everyone connected.
//!
//! - `registry`: get-or-wake under an ownership lease, the sleep handshake, calls with deadlines.
//! - `handle`: the cheap handle, mailbox commands, errors, subscriptions.
//! - `actor`: the select loop; it never awaits the network or the database itself.
//! - `writer`: the room-log writer task (seqs, persist, then broadcast; idempotent retries).
//! - `turns`: prompts, the queue, the turn state machine, the agent session.
//! - `permissions`: the agent's permission requests, first answer wins.
//! - `presence`: who is in the room, ephemeral and coalesced.
//! - `recover`: what a previous run left in flight.

mod actor;
mod handle;
mod permissions;
mod presence;
mod recover;
mod registry;
mod turns;
mod writer;

pub use handle::{Live, LiveEntry, RoomError, RoomHandle, Subscription};
pub use registry::{CALL_DEADLINE, Registry, RoomDeps};

/// The session id of a workspace: its `default` session.
pub fn session_id_of(workspace_id: &str) -> String {
    format!("{workspace_id}/default")
}
