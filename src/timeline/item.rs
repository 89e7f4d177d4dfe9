//! The rows of the timeline and their views: what the UI renders.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;
use crate::model::NoticeLevel;

/// One row of the timeline. `rev` is the last room-log seq that changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub key: String,
    pub rev: i64,
    pub at: i64,
    pub view: View,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum View {
    Chat {
        user_id: String,
        display_name: String,
        text: String,
        /// For the team, not a prompt.
        team_only: bool,
        images: Vec<crate::model::ImageRef>,
        /// The people it mentions (highlighted where their `@Name` is).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<crate::model::Mention>,
    },
    /// The agent's reply in one turn; `done` once the turn ended (then it is rendered as markdown).
    Agent {
        text: String,
        done: bool,
    },
    Thought {
        text: String,
    },
    Tool(ToolView),
    Plan {
        entries: Vec<PlanEntryView>,
    },
    Permission(PermissionView),
    System {
        level: NoticeLevel,
        text: String,
    },
    Raw {
        label: String,
        json: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolView {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub status: ToolStatus,
    pub diffs: Vec<DiffView>,
    /// Text content (often markdown: Claude fences command output); rendered once the call ends.
    pub text: Vec<String>,
    /// A terminal's output, as the agent streams it (`_meta.terminal_output`), and how it ended.
    pub terminal: Option<TerminalView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TerminalView {
    pub output: String,
    /// "exit 0", "signal SIGTERM"
    pub exit: Option<String>,
}

impl ToolView {
    /// Whether the call is over: its text is then rendered as markdown, once.
    pub fn finished(&self) -> bool {
        matches!(self.status, ToolStatus::Completed | ToolStatus::Failed)
    }

    /// The key its `i`th text is rendered under.
    pub fn text_key(item_key: &str, i: usize) -> String {
        format!("{item_key}/{i}")
    }

    /// The output an agent sends only in `rawOutput` (Codex: its command's end, with no terminal
    /// chunks), shown when the call has no other output.
    pub(super) fn raw_output(&mut self, raw: Option<&Value>) {
        let Some(raw) = raw else { return };
        let has_output = self.terminal.as_ref().is_some_and(|t| !t.output.is_empty())
            || self.text.iter().any(|t| !t.trim().is_empty())
            || !self.diffs.is_empty();
        if has_output {
            return;
        }
        let text = |key: &str| {
            raw.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let output = match raw {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => text("aggregated_output")
                .or_else(|| text("formatted_output"))
                .or_else(|| text("output"))
                .map(str::to_string)
                .or_else(|| match (text("stdout"), text("stderr")) {
                    (None, None) => None,
                    (out, err) => Some(format!("{}{}", out.unwrap_or(""), err.unwrap_or(""))),
                }),
        };
        if let Some(output) = output {
            self.terminal
                .get_or_insert_with(TerminalView::default)
                .output = output;
        }
    }

    /// What the agent says about the call's terminal in `_meta` (sent when the client advertises
    /// `terminal_output`).
    pub(super) fn terminal_meta(&mut self, meta: Option<&serde_json::Map<String, Value>>) {
        let Some(meta) = meta else { return };
        if meta.contains_key("terminal_info") && self.terminal.is_none() {
            self.terminal = Some(TerminalView::default());
        }
        if let Some(data) = meta
            .get("terminal_output")
            .and_then(|o| o.get("data"))
            .and_then(Value::as_str)
        {
            self.terminal
                .get_or_insert_with(TerminalView::default)
                .output
                .push_str(data);
        }
        if let Some(exit) = meta.get("terminal_exit") {
            let how = match (
                exit.get("exit_code").and_then(Value::as_i64),
                exit.get("signal").and_then(Value::as_str),
            ) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(signal)) => format!("signal {signal}"),
                _ => "ended".into(),
            };
            self.terminal.get_or_insert_with(TerminalView::default).exit = Some(how);
        }
    }
}

/// A choice of a permission request: its id, its name, and its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceView {
    pub id: String,
    pub name: String,
    pub kind: ChoiceKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntryView {
    pub content: String,
    pub status: PlanStatus,
}

/// Where a tool call is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    #[default]
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl ToolStatus {
    /// As in ACP (`in_progress`): for attributes and classes.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolStatus::Pending => "pending",
            ToolStatus::InProgress => "in_progress",
            ToolStatus::Completed => "completed",
            ToolStatus::Failed => "failed",
        }
    }

    /// As people read it.
    pub fn label(self) -> &'static str {
        match self {
            ToolStatus::InProgress => "in progress",
            other => other.as_str(),
        }
    }
}

/// Where an entry of the agent's plan is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    #[default]
    Pending,
    InProgress,
    Completed,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Pending => "pending",
            PlanStatus::InProgress => "in_progress",
            PlanStatus::Completed => "completed",
        }
    }
}

/// What choosing an option of a permission request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceKind {
    AllowOnce,
    AllowAlways,
    RejectOnce,
    RejectAlways,
}

impl ChoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceKind::AllowOnce => "allow_once",
            ChoiceKind::AllowAlways => "allow_always",
            ChoiceKind::RejectOnce => "reject_once",
            ChoiceKind::RejectAlways => "reject_always",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionView {
    pub request_id: String,
    pub title: String,
    /// The kind of the tool call it is about: `switch_mode` is Claude asking to leave plan mode.
    pub tool_kind: String,
    /// Text the agent shows with the question (markdown: Claude's plan, when it asks to leave
    /// plan mode); rendered at once, as it comes whole.
    pub text: Vec<String>,
    pub options: Vec<ChoiceView>,
    /// Who answered, and the name of the option they chose.
    pub answered: Option<(String, String)>,
    pub cancelled: bool,
}

/// The turn that is running, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningTurn {
    pub prompt_seq: i64,
    pub display_name: String,
    pub started_at: i64,
}

/// A prompt waiting for its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub seq: i64,
    pub user_id: String,
    pub display_name: String,
    pub text: String,
}

impl Waiting {
    /// Whether this person sent it.
    pub fn mine(&self, person_id: &str) -> bool {
        self.user_id == person_id
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub items: Vec<Item>,
    pub running: Option<RunningTurn>,
    pub queue: Vec<Waiting>,
    /// What the agent says about its session: shown with the room, not as rows.
    pub session: SessionFacts,
}
