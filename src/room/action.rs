//! What a caller asks of a room, as data: carried out by the thread's actor on the node that owns
//! the workspace, and forwarded there (serialised) by any other node.

use serde::{Deserialize, Serialize};

use crate::model::{ImageRef, Member, Mention, NoticeLevel};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Info,
    #[serde(rename_all = "camelCase")]
    WorkspaceRenamed {
        member: Member,
        name: String,
    },
    #[serde(rename_all = "camelCase")]
    Prompt {
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<ImageRef>,
        mentions: Vec<Mention>,
    },
    #[serde(rename_all = "camelCase")]
    Cancel {
        member: Member,
        clear_queue: bool,
    },
    #[serde(rename_all = "camelCase")]
    SetOption {
        member: Member,
        config_id: String,
        value: String,
    },
    #[serde(rename_all = "camelCase")]
    RemoveQueued {
        member: Member,
        prompt_seq: i64,
        any: bool,
    },
    #[serde(rename_all = "camelCase")]
    Permission {
        member: Member,
        request_id: String,
        option_id: String,
    },
    Typing {
        member: Member,
    },
    /// Someone connected to another node that follows the room, present here (refreshed).
    Join {
        member: Member,
        token: String,
    },
    Leave {
        token: String,
    },
    Notice {
        level: NoticeLevel,
        message: String,
    },
    /// The workspace is being deleted or moved at another node: its threads stop here and its
    /// lease goes, for that node to hold while it works.
    Retire,
}
