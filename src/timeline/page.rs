//! The tail a page ships first, older pages, rendered markdown by key, and what viewers may not
//! see.

use serde::{Deserialize, Serialize};

use super::*;

impl Fold {
    /// Keeps the most recent rows only (what a page shows first): at least `min` rows, then more
    /// while their text stays within `budget` bytes and their number within `max`. Returns how
    /// many leading rows were dropped: older history pages in from there ([`Fold::page`]).
    /// References to dropped rows are forgotten (a later update to one starts a new row).
    pub fn tail(mut self, min: usize, max: usize, budget: usize) -> (Fold, usize) {
        let mut bytes = 0;
        let mut keep = 0;
        for item in self.items.iter().rev() {
            let size = item_bytes(item);
            if keep >= min && (keep >= max || bytes + size > budget) {
                break;
            }
            bytes += size;
            keep += 1;
        }
        let cut = self.items.len() - keep;
        if cut == 0 {
            return (self, 0);
        }
        self.items.drain(..cut);
        let shift = |i: usize| i.checked_sub(cut);
        self.agent = self.agent.and_then(shift);
        self.thought = self.thought.and_then(shift);
        self.plan = self.plan.and_then(shift);
        self.tools = std::mem::take(&mut self.tools)
            .into_iter()
            .filter_map(|(k, i)| shift(i).map(|i| (k, i)))
            .collect();
        self.permissions = std::mem::take(&mut self.permissions)
            .into_iter()
            .filter_map(|(k, i)| shift(i).map(|i| (k, i)))
            .collect();
        self.left = std::mem::take(&mut self.left)
            .into_iter()
            .filter_map(|(k, (i, at))| shift(i).map(|i| (k, (i, at))))
            .collect();
        // Chats are looked up when a prompt is queued: only recent ones can be.
        let mut seqs: Vec<i64> = self.chats.keys().copied().collect();
        seqs.sort_unstable();
        for seq in seqs.iter().take(seqs.len().saturating_sub(100)) {
            self.chats.remove(seq);
        }
        (self, cut)
    }

    /// Drops the source text of finished markdown (a page carries its rendered HTML instead, and
    /// a finished row never changes again).
    pub fn without_finished_text(mut self) -> Self {
        clear_finished_text(&mut self.items);
        self
    }

    /// Rows `[start, before)` of the whole fold, `start` chosen so the page holds at most `max`
    /// rows and about `budget` bytes of text (at least one row): a keyset page of older history.
    pub fn page(&self, before: usize, max: usize, budget: usize) -> (usize, Vec<Item>) {
        let before = before.min(self.items.len());
        let mut start = before;
        let mut bytes = 0;
        while start > 0 && before - start < max {
            let size = item_bytes(&self.items[start - 1]);
            if start < before && bytes + size > budget {
                break;
            }
            bytes += size;
            start -= 1;
        }
        (start, self.items[start..before].to_vec())
    }

    /// The fold as viewers get it: no path of the working directory, in any row, and not the
    /// directory itself.
    pub fn without_paths(mut self) -> Self {
        if let Some(dir) = self.cwd.take() {
            hide_paths(&mut self.items, &dir);
        }
        self
    }
}

/// Paths of the working directory made relative in every text of these rows.
pub fn hide_paths(items: &mut [Item], dir: &str) {
    let fix = |s: &mut String| crate::paths::make_relative(s, dir);
    for item in items {
        match &mut item.view {
            View::Agent { text, .. } | View::Thought { text } => fix(text),
            View::Tool(t) => {
                fix(&mut t.title);
                t.text.iter_mut().for_each(fix);
                for d in &mut t.diffs {
                    fix(&mut d.path);
                    d.hunks
                        .iter_mut()
                        .flat_map(|h| &mut h.lines)
                        .for_each(|l| fix(&mut l.text));
                }
                if let Some(term) = &mut t.terminal {
                    fix(&mut term.output);
                }
            }
            View::Permission(p) => {
                fix(&mut p.title);
                p.text.iter_mut().for_each(fix);
            }
            View::System { text, .. } => fix(text),
            View::Raw { json, .. } => fix(json),
            View::Chat { .. } | View::Plan { .. } => {}
        }
    }
}

/// Clears the source text of finished markdown in these rows (see [`Fold::without_finished_text`]).
pub fn clear_finished_text(items: &mut [Item]) {
    for item in items {
        match &mut item.view {
            View::Agent { text, done: true } => text.clear(),
            View::Tool(tool) if tool.finished() => tool.text.iter_mut().for_each(String::clear),
            _ => {}
        }
    }
}

/// About how many bytes a row takes on a page.
pub(super) fn item_bytes(item: &Item) -> usize {
    64 + match &item.view {
        View::Chat { text, .. } | View::Agent { text, .. } | View::Thought { text } => text.len(),
        View::Tool(t) => {
            t.text.iter().map(String::len).sum::<usize>()
                + t.diffs.iter().map(DiffView::bytes).sum::<usize>()
                + t.terminal.as_ref().map_or(0, |t| t.output.len())
        }
        View::Raw { json, .. } => json.len(),
        View::System { text, .. } => text.len(),
        _ => 128,
    }
}

/// Texts of a row by the keys they are rendered under.
pub(super) fn keyed_texts(item_key: &str, texts: &[String]) -> Vec<(String, String)> {
    texts
        .iter()
        .enumerate()
        .map(|(n, text)| (ToolView::text_key(item_key, n), text.clone()))
        .collect()
}

/// A row's finished markdown, by key (nothing while it is still streaming).
pub fn finished_markdown(item: &Item) -> Vec<(String, String)> {
    match &item.view {
        View::Agent { text, done: true } => vec![(item.key.clone(), text.clone())],
        View::Tool(tool) if tool.finished() => keyed_texts(&item.key, &tool.text),
        View::Permission(p) => keyed_texts(&item.key, &p.text),
        _ => Vec::new(),
    }
}

/// What the page of a workspace needs: who is looking, what they may do, and the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPage {
    pub me: crate::model::Me,
    pub access: crate::model::Access,
    pub info: crate::model::WorkspaceInfo,
    /// The room log folded into its timeline (not the log itself: a day of agent output is tens
    /// of thousands of entries, and a few hundred rows).
    pub fold: Fold,
    /// The newest room-log seq folded in: the live stream resumes after it.
    pub head: i64,
    /// Finished markdown (agent text segments, tool text) rendered to sanitised HTML, by key.
    pub rendered: Vec<(String, String)>,
    /// How many older rows come before the fold's first: `/api/workspace/history` pages them in.
    pub older: usize,
    /// The workspace's threads, for the thread list.
    pub threads: crate::model::ThreadList,
}

/// Answer of `POST /api/workspace/history`: the rows `[start, before)` of the room's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub start: usize,
    pub items: Vec<Item>,
    pub rendered: Vec<(String, String)>,
}
