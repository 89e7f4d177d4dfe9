//! How callers talk to a room: a cheap handle, the commands of its mailbox, replies, and what a
//! subscriber receives.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::model::{Member, RoomEntry, WorkspaceInfo};
use crate::sandbox_agent::AcpError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The id as a message may quote it ([`crate::error::quoted`]).
    #[error("There is no workspace {0}.")]
    UnknownWorkspace(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the agent is unavailable: {0}")]
    Agent(#[from] AcpError),
    #[error("the workspace stopped unexpectedly; try again")]
    Stopped,
    /// The actor was falling asleep as the call came in: the call is retried on a fresh actor.
    #[error("the workspace is waking up; try again")]
    Asleep,
    /// The actor did not answer within the call's deadline.
    #[error("the workspace did not answer in time")]
    Timeout,
    /// Another live Huddle process owns this workspace.
    #[error("this workspace is open on another Huddle server")]
    OwnedElsewhere,
    /// The room log cannot be written now.
    #[error("the database is unavailable")]
    DatabaseDown,
    /// As many prompts as allowed already wait.
    #[error("the queue is full ({0} prompts wait)")]
    QueueFull(usize),
    /// The sandbox host the workspace is on does not answer.
    #[error("the sandbox host {0} is unreachable")]
    HostUnreachable(String),
    /// The workspace is being deleted.
    #[error("the workspace is being deleted")]
    Deleting,
    /// What the node that owns the workspace answered a forwarded action.
    #[error("{0}")]
    Remote(crate::error::ApiError),
}

impl RoomError {
    /// The room said no, and recorded nothing (unlike a timeout, after which it may have).
    pub fn refused(&self) -> bool {
        matches!(
            self,
            RoomError::UnknownWorkspace(_)
                | RoomError::Invalid(_)
                | RoomError::Conflict(_)
                | RoomError::NotFound(_)
                | RoomError::Forbidden(_)
                | RoomError::OwnedElsewhere
                | RoomError::QueueFull(_)
                | RoomError::HostUnreachable(_)
                | RoomError::Deleting
        ) || matches!(self, RoomError::Remote(e) if e.refused())
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, RoomError>>;

pub(super) enum Command {
    Info(Reply<WorkspaceInfo>),
    WorkspaceRenamed {
        member: Member,
        name: String,
        reply: Reply<()>,
    },
    Prompt {
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<crate::model::ImageRef>,
        mentions: Vec<crate::model::Mention>,
        reply: Reply<i64>,
    },
    Cancel {
        member: Member,
        clear_queue: bool,
        reply: Reply<()>,
    },
    SetOption {
        member: Member,
        config_id: String,
        value: String,
        reply: Reply<()>,
    },
    RemoveQueued {
        member: Member,
        prompt_seq: i64,
        any: bool,
        reply: Reply<()>,
    },
    Permission {
        member: Member,
        request_id: String,
        option_id: String,
        reply: Reply<()>,
    },
    Connect {
        member: Option<Member>,
        reply: Reply<Subscription>,
    },
    Disconnect {
        conn_id: u64,
    },
    Typing {
        member: Member,
    },
    /// Someone connected to another node that follows the room (or that node saying they still
    /// are).
    RemoteJoin {
        member: Member,
        token: String,
        reply: Reply<()>,
    },
    RemoteLeave {
        token: String,
    },
    Renamed {
        user_id: String,
        name: String,
    },
    Crash,
    /// The room closes for good, or to move: it stops its agent and sandbox, then says so.
    Retire {
        done: oneshot::Sender<()>,
    },
    /// A note from outside the room (its sandbox moved).
    Notice {
        level: crate::model::NoticeLevel,
        message: String,
    },
}

impl Command {
    /// Answers a command the actor will not carry out.
    pub(super) fn reject(self, err: impl Fn() -> RoomError) {
        match self {
            Command::Info(r) => drop(r.send(Err(err()))),
            Command::WorkspaceRenamed { reply, .. } => drop(reply.send(Err(err()))),
            Command::Prompt { reply, .. } => drop(reply.send(Err(err()))),
            Command::Cancel { reply, .. } => drop(reply.send(Err(err()))),
            Command::Permission { reply, .. } => drop(reply.send(Err(err()))),
            Command::RemoveQueued { reply, .. } => drop(reply.send(Err(err()))),
            Command::SetOption { reply, .. } => drop(reply.send(Err(err()))),
            Command::Connect { reply, .. } => drop(reply.send(Err(err()))),
            Command::RemoteJoin { reply, .. } => drop(reply.send(Err(err()))),
            Command::Disconnect { .. }
            | Command::RemoteLeave { .. }
            | Command::Typing { .. }
            | Command::Renamed { .. }
            | Command::Retire { .. }
            | Command::Notice { .. }
            | Command::Crash => {}
        }
    }
}

/// A cheap handle to one thread's actor.
#[derive(Clone)]
pub struct RoomHandle {
    pub(super) tx: mpsc::Sender<Command>,
    /// The workspace the thread is in.
    pub(super) workspace: Arc<str>,
}

impl RoomHandle {
    /// Tells the actor a subscriber left; from a Drop, so it never waits.
    pub fn disconnect(&self, conn_id: u64) {
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            tx.try_send(Command::Disconnect { conn_id })
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub(super) fn same(&self, other: &RoomHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// What the broadcast carries: persisted entries, and signals that are not kept.
#[derive(Debug, Clone)]
pub enum Live {
    Entry(Arc<LiveEntry>),
    Typing(Member),
    /// Who is in the room now (sent when it changes, coalesced).
    Online(Arc<Vec<Member>>),
    /// The room log cannot be written: streams end, so that clients show they are reconnecting
    /// and resume from their last entry once it can.
    LogDown,
}

/// An entry as it is broadcast: serialised once for all of its subscribers, not once each.
#[derive(Debug)]
pub struct LiveEntry {
    pub entry: RoomEntry,
    json: std::sync::OnceLock<String>,
    /// When it was broadcast (the fan-out delay is measured from it).
    pub born: std::time::Instant,
}

impl LiveEntry {
    pub fn new(entry: RoomEntry) -> Self {
        Self {
            entry,
            json: std::sync::OnceLock::new(),
            born: std::time::Instant::now(),
        }
    }

    /// The entry as JSON (made by the first subscriber that asks).
    pub fn json(&self) -> &str {
        self.json
            .get_or_init(|| serde_json::to_string(&self.entry).unwrap_or_default())
    }
}

/// A live subscription to a room: entries after `head` come on `live`. Dropping it leaves the
/// room, however the stream ended (even before anyone read it).
pub struct Subscription {
    pub conn_id: u64,
    pub head: i64,
    /// What comes live, and who was in the room when it was taken: see [`Subscription::take`].
    pub(super) live: Option<broadcast::Receiver<Live>>,
    pub(super) online: Option<Arc<Vec<Member>>>,
    pub(super) leave: Leave,
}

/// How a subscription leaves its room.
pub(super) enum Leave {
    /// It is the owner's actor's.
    Actor(RoomHandle),
    /// This node follows the room's log (another node owns it); the person, if any, is present
    /// at the owner until it is dropped.
    Follower(
        #[allow(dead_code)] crate::cluster::follow::Guard,
        #[allow(dead_code)] Option<super::registry::RemotePresence>,
    ),
}

impl Subscription {
    /// Who was in the room when it was taken, and what comes live as a stream: once (`None`
    /// after), so that a long-lived stream keeps neither. The subscription is still to be held as
    /// long as the stream is read: dropping it leaves the room.
    pub fn take(
        &mut self,
    ) -> Option<(
        Arc<Vec<Member>>,
        tokio_stream::wrappers::BroadcastStream<Live>,
    )> {
        Some((
            self.online.take()?,
            tokio_stream::wrappers::BroadcastStream::new(self.live.take()?),
        ))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Leave::Actor(handle) = &self.leave {
            handle.disconnect(self.conn_id);
        }
    }
}
