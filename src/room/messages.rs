//! What the room actor's own tasks and its writer tell it: results of the work it handed out.

use std::sync::Arc;

use super::handle::Reply;
use crate::model::{ImageRef, Member};
use crate::sandbox_agent::{AcpError, Session, TurnEnd};

/// What the actor does once a write it asked for is in Postgres (or could not be made).
pub(super) enum Then {
    Prompt {
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<ImageRef>,
        reply: Reply<i64>,
    },
    Cancel {
        reply: Reply<()>,
    },
    /// The room's state naming where the prompt goes is kept: the task that waits on it is told
    /// whether the prompt may go (not when Stop was asked meanwhile).
    StateKept {
        prompt_seq: i64,
        kept: tokio::sync::oneshot::Sender<bool>,
    },
}

/// Results of the actor's tasks and of its writer.
pub(super) enum Internal {
    Written {
        first_seq: i64,
        then: Then,
    },
    WriteFailed {
        then: Then,
    },
    SessionReady(Result<Arc<Session>, AcpError>),
    TurnDone {
        prompt_seq: i64,
        result: Result<TurnEnd, AcpError>,
    },
    /// A turn's prompt went out on this connection with this request id.
    PromptSent {
        prompt_seq: i64,
        connection: String,
        rpc_id: u64,
        /// Told once the state naming the connection is kept whether the prompt may go out (only
        /// then does it; never after a Stop).
        kept: tokio::sync::oneshot::Sender<bool>,
    },
    /// Re-attaching to the connection of a turn that was running before a restart.
    Reattached {
        prompt_seq: i64,
        result: Result<Arc<Session>, AcpError>,
    },
    PermissionSent {
        request_id: String,
        option_id: String,
        member: Member,
        reply: Reply<()>,
        result: Result<(), AcpError>,
    },
    OptionSet {
        member: Member,
        config_id: String,
        value: String,
        reply: Reply<()>,
        result: Result<(), AcpError>,
    },
    /// The writer found the workspace's lease taken by another process.
    LeaseLost,
}
