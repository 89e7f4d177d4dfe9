//! The room's timeline as the UI shows it, folded from the room log: teammates' messages, the
//! agent's reply coalesced into one message per turn, thoughts, tool-call cards, plans, shared
//! permission requests, system notices, and a compact row for envelopes with no view of their own.
//! Pure and shared: the server renders it, the browser keeps it up to date.
//!
//! - `item`: the rows and their views (what the UI renders).
//! - `session`: the session's facts (title, commands, usage, options), shown with the room.
//! - `apply`: room events (messages, turns, the queue, presence, notices) into rows.
//! - `acp`: the agent's ACP envelopes into rows, one arm per session update.
//! - `page`: the tail a page ships first, older pages, and what viewers may not see.
//! - `diff`: what an edit changed, line by line.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::RoomEntry;

mod acp;
mod apply;
mod diff;
mod item;
mod page;
mod session;
#[cfg(test)]
mod tests;

pub use diff::{DiffLine, DiffView, Hunk, LineKind};
pub use item::*;
pub use page::{HistoryPage, RoomPage, clear_finished_text, finished_markdown, hide_paths};
pub use session::*;

/// The fold of a room log so far: the timeline, and what it takes to apply the next entry to
/// it. The page ships it (not the log), and the browser applies each streamed entry to it: only
/// the rows an entry changes are touched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    items: Vec<Item>,
    /// Rows changed by the entry being applied.
    #[serde(skip)]
    changed: Vec<usize>,
    agent: Option<usize>,
    thought: Option<usize>,
    plan: Option<usize>,
    tools: HashMap<String, usize>,
    permissions: HashMap<String, usize>,
    chats: HashMap<i64, (String, String)>,
    running: Option<RunningTurn>,
    queue: Vec<Waiting>,
    /// Who left, where that row is and when: someone back within seconds gets one row, not two.
    left: HashMap<String, (usize, i64)>,
    session: SessionFacts,
    /// The agent's working directory, from the request that opened its session (viewers get
    /// none): paths in it are shown relative to it.
    #[serde(default)]
    cwd: Option<String>,
    /// Who the log has in the room: joining again without having left (after a restart) adds no
    /// row.
    #[serde(default)]
    present: std::collections::HashSet<String>,
    /// The workspace's name, once someone renamed it while people watched.
    #[serde(default)]
    name: Option<String>,
}

/// A leave and a join closer than this (a reload, a flaky network) show as one "reconnected" row.
const RECONNECT_WINDOW_MS: i64 = 30_000;

impl Fold {
    pub(super) fn push(&mut self, key: String, e: &RoomEntry, view: View) -> usize {
        self.items.push(Item {
            key,
            rev: e.seq,
            at: e.created_at,
            view,
        });
        self.changed.push(self.items.len() - 1);
        self.items.len() - 1
    }

    pub(super) fn touch(&mut self, i: usize, e: &RoomEntry) -> &mut View {
        self.changed.push(i);
        let item = &mut self.items[i];
        item.rev = e.seq;
        &mut item.view
    }

    /// Applies the next entry; the rows it changed or added, in order, without repeats.
    pub fn apply(&mut self, e: &RoomEntry) -> Vec<usize> {
        self.changed.clear();
        self.entry(e);
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn running(&self) -> Option<&RunningTurn> {
        self.running.as_ref()
    }

    pub fn queue(&self) -> &[Waiting] {
        &self.queue
    }

    pub fn session(&self) -> &SessionFacts {
        &self.session
    }

    /// The key of the oldest permission request nobody has answered yet (the agent waits on it).
    pub fn open_question(&self) -> Option<&str> {
        let open = |i: &usize| {
            self.items.get(*i).is_some_and(|item| {
                matches!(&item.view, View::Permission(p) if p.answered.is_none() && !p.cancelled)
            })
        };
        let first = self.permissions.values().copied().filter(open).min()?;
        Some(self.items[first].key.as_str())
    }

    /// The workspace's name as the log last gave it.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The agent's working directory, as the log says (None for viewers).
    pub fn cwd(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// The timeline as it stands.
    pub fn timeline(&self) -> Timeline {
        Timeline {
            items: self.items.clone(),
            running: self.running.clone(),
            queue: self.queue.clone(),
            session: self.session.clone(),
        }
    }
}

/// Folds the room log into the timeline.
pub fn build(entries: &[RoomEntry]) -> Timeline {
    fold(entries).timeline()
}

/// Folds the room log into its fold state (what the page ships).
pub fn fold(entries: &[RoomEntry]) -> Fold {
    let mut fold = Fold::default();
    for e in entries {
        fold.entry(e);
    }
    fold.changed.clear();
    fold
}

/// A permission request as the room shows it (its question and choices), from its log entry.
pub fn permission_of(request_id: &str, request: &serde_json::Value) -> PermissionView {
    acp::permission_view(request_id, request)
}
