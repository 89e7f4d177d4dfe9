//! The room's timeline as the UI shows it, folded from the room log: teammates' messages, the
//! agent's reply coalesced into one message per turn, thoughts, tool-call cards, plans, shared
//! permission requests, system notices, and a compact row for envelopes with no view of their own.
//! Pure and shared: the server renders it, the browser keeps it up to date.

use std::collections::HashMap;

use agent_client_protocol_schema::MaybeUndefined;
use agent_client_protocol_schema::v1::{
    AgentNotification, ContentBlock, NewSessionResponse, RequestPermissionRequest,
    SessionConfigKind, SessionConfigOption, SessionConfigSelectOptions, SessionModeState,
    SessionUpdate, ToolCallContent, ToolCallStatus, ToolKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{NoticeLevel, RoomEntry, RoomEvent, Sender};

mod diff;
mod paths;
pub use diff::{DiffLine, DiffView, Hunk, LineKind};
pub use paths::{relative, relative_json};

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
    pub status: String,
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
        matches!(self.status.as_str(), "completed" | "failed")
    }

    /// The key its `i`th text is rendered under.
    pub fn text_key(item_key: &str, i: usize) -> String {
        format!("{item_key}/{i}")
    }

    /// The output an agent sends only in `rawOutput` (Codex: its command's end, with no terminal
    /// chunks), shown when the call has no other output.
    fn raw_output(&mut self, raw: Option<&Value>) {
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
    fn terminal_meta(&mut self, meta: Option<&serde_json::Map<String, Value>>) {
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

/// A choice of a permission request: its id, its name, and its kind (`allow_once`,
/// `allow_always`, `reject_once`, `reject_always`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceView {
    pub id: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntryView {
    pub content: String,
    pub status: String,
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

/// The agent's session as it describes it: title, slash commands, context use, and the options
/// people may change (mode, model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    pub title: Option<String>,
    pub commands: Vec<CommandView>,
    pub usage: Option<UsageView>,
    pub options: Vec<OptionView>,
    /// What earlier agent processes of the session spent, and what the current one has: an
    /// adapter counts its cost from nothing when it starts (after a Stop, a restart, sleep), and
    /// the room's total never goes down.
    #[serde(default)]
    spent_before: f64,
    #[serde(default)]
    spent_now: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandView {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageView {
    /// Tokens in the context window (Claude's adapter sends none while it does not know), and
    /// its size.
    pub used: Option<u64>,
    pub size: u64,
    /// Spent so far, with its currency.
    pub cost: Option<(f64, String)>,
}

impl UsageView {
    /// A `usage_update` the schema refuses because `used` is null, as Claude's adapter sends
    /// before it knows the context's size in tokens.
    fn lenient(params: &Value) -> Option<Self> {
        let u = params.get("update")?;
        if u.get("sessionUpdate")? != "usage_update" || !u.get("used")?.is_null() {
            return None;
        }
        let cost = u.get("cost").and_then(|c| {
            Some((
                c.get("amount")?.as_f64()?,
                c.get("currency")?.as_str()?.to_string(),
            ))
        });
        Some(UsageView {
            used: None,
            size: u.get("size")?.as_u64()?,
            cost,
        })
    }

    /// "Context 12.3k / 200k (6%) · 0.03 USD".
    pub fn label(&self) -> String {
        let k = |n: u64| {
            if n >= 1000 {
                format!("{:.1}k", n as f64 / 1000.0)
            } else {
                n.to_string()
            }
        };
        let mut label = match self.used {
            Some(used) => {
                let pct = (used * 100).checked_div(self.size).unwrap_or(0);
                format!("Context {} / {} ({pct}%)", k(used), k(self.size))
            }
            None => format!("Context window {}", k(self.size)),
        };
        if let Some((amount, currency)) = &self.cost {
            label.push_str(&format!(" · {amount:.2} {currency}"));
        }
        label
    }
}

/// The id under which a legacy mode list (`modes`) is offered as an option.
pub const MODE_OPTION: &str = "_mode";

/// A select option of the session (the mode, the model, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionView {
    pub id: String,
    pub name: String,
    pub current: String,
    /// (value, name)
    pub choices: Vec<(String, String)>,
    /// The agent's mode (a mode list, or an option of the mode category: Codex names its
    /// "Approval Preset").
    #[serde(default)]
    pub is_mode: bool,
}

impl OptionView {
    fn from_config(o: &SessionConfigOption) -> Option<Self> {
        let SessionConfigKind::Select(select) = &o.kind else {
            return None;
        };
        let choices = match &select.options {
            SessionConfigSelectOptions::Ungrouped(list) => list
                .iter()
                .map(|c| (c.value.to_string(), c.name.clone()))
                .collect(),
            SessionConfigSelectOptions::Grouped(groups) => groups
                .iter()
                .flat_map(|g| g.options.iter())
                .map(|c| (c.value.to_string(), c.name.clone()))
                .collect(),
            _ => Vec::new(),
        };
        let is_mode = matches!(
            o.category,
            Some(agent_client_protocol_schema::v1::SessionConfigOptionCategory::Mode)
        ) || o.id.to_string() == "mode"
            || o.name.eq_ignore_ascii_case("mode");
        Some(OptionView {
            id: o.id.to_string(),
            name: o.name.clone(),
            current: select.current_value.to_string(),
            choices,
            is_mode,
        })
    }

    fn from_modes(m: &SessionModeState) -> Self {
        OptionView {
            id: MODE_OPTION.into(),
            name: "Mode".into(),
            current: m.current_mode_id.to_string(),
            choices: m
                .available_modes
                .iter()
                .map(|m| (m.id.to_string(), m.name.clone()))
                .collect(),
            is_mode: true,
        }
    }
}

impl SessionFacts {
    /// A new connection: a new agent process, whose cost counts from nothing.
    fn new_process(&mut self) {
        self.spent_before += std::mem::take(&mut self.spent_now);
    }

    fn set_usage(&mut self, mut usage: UsageView) {
        if let Some((amount, _)) = &mut usage.cost {
            self.spent_now = *amount;
            *amount += self.spent_before;
        }
        self.usage = Some(usage);
    }

    fn set_options(&mut self, options: &[SessionConfigOption]) {
        let modes = self.options.iter().find(|o| o.id == MODE_OPTION).cloned();
        self.options = options.iter().filter_map(OptionView::from_config).collect();
        // Agents that offer a mode option need no legacy mode list.
        if let Some(m) = modes
            && !self.options.iter().any(|o| o.is_mode)
        {
            self.options.insert(0, m);
        }
    }

    /// What a session's opening answer (`session/new`, `session/load`) says.
    fn opened(&mut self, result: &Value) {
        // `session/load` answers without a session id; the shape is otherwise the same.
        let mut result = result.clone();
        if result.get("sessionId").is_none() {
            result["sessionId"] = Value::String(String::new());
        }
        let Ok(r) = serde_json::from_value::<NewSessionResponse>(result) else {
            return;
        };
        if let Some(modes) = &r.modes {
            self.options.retain(|o| o.id != MODE_OPTION);
            self.options.insert(0, OptionView::from_modes(modes));
        }
        if let Some(options) = &r.config_options {
            self.set_options(options);
        }
    }
}

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
    fn push(&mut self, key: String, e: &RoomEntry, view: View) -> usize {
        self.items.push(Item {
            key,
            rev: e.seq,
            at: e.created_at,
            view,
        });
        self.changed.push(self.items.len() - 1);
        self.items.len() - 1
    }

    fn touch(&mut self, i: usize, e: &RoomEntry) -> &mut View {
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

    fn system(&mut self, e: &RoomEntry, level: NoticeLevel, text: String) {
        self.push(format!("s{}", e.seq), e, View::System { level, text });
    }

    fn end_turn(&mut self, e: &RoomEntry) {
        self.end_segment(e);
        self.plan = None;
    }

    /// Something other than text comes next (a thought, a tool call, a plan, a question): the text
    /// so far is a finished segment, rendered once, and later text starts a new one below. So the
    /// room shows what the agent did in the order it did it.
    fn end_segment(&mut self, e: &RoomEntry) {
        if let Some(i) = self.agent.take()
            && let View::Agent { done, .. } = self.touch(i, e)
        {
            *done = true;
        }
        self.thought = None;
    }

    fn entry(&mut self, e: &RoomEntry) {
        match &e.event {
            RoomEvent::ChatUser { user_id, display_name, text, team_only, images, .. } => {
                self.chats.insert(e.seq, (display_name.clone(), text.clone()));
                let view = View::Chat {
                    user_id: user_id.clone(),
                    display_name: display_name.clone(),
                    text: text.clone(),
                    team_only: *team_only,
                    images: images.clone(),
                };
                self.push(format!("c{}", e.seq), e, view);
            }
            RoomEvent::SessionEvent(ev) => self.session_event(e, ev.sender, &ev.payload),
            RoomEvent::PromptQueued { prompt_seq, user_id, display_name, .. } => {
                let text = self.chats.get(prompt_seq).map(|c| c.1.clone()).unwrap_or_default();
                self.queue.push(Waiting {
                    seq: *prompt_seq,
                    user_id: user_id.clone(),
                    display_name: display_name.clone(),
                    text,
                });
            }
            RoomEvent::TurnStarted { prompt_seq, display_name, .. } => {
                self.end_turn(e);
                self.queue.retain(|w| w.seq != *prompt_seq);
                self.running = Some(RunningTurn {
                    prompt_seq: *prompt_seq,
                    display_name: display_name.clone(),
                    started_at: e.created_at,
                });
            }
            RoomEvent::QueueCleared { display_name, prompt_seqs, .. } => {
                self.queue.retain(|w| !prompt_seqs.contains(&w.seq));
                let n = prompt_seqs.len();
                self.system(
                    e,
                    NoticeLevel::Info,
                    format!("{display_name} cleared the queue: {n} prompt(s) will not run."),
                );
            }
            RoomEvent::PromptRemoved { prompt_seq, display_name, .. } => {
                self.queue.retain(|w| w.seq != *prompt_seq);
                self.system(e, NoticeLevel::Info, format!("{display_name} removed a waiting prompt."));
            }
            RoomEvent::TurnCancelling { display_name, .. } => {
                self.system(e, NoticeLevel::Info, format!("{display_name} stopped the agent."));
            }
            RoomEvent::TurnEnded { stop_reason, error, .. } => {
                self.end_turn(e);
                self.running = None;
                match (stop_reason.as_deref(), error) {
                    (_, Some(err)) => self.system(e, NoticeLevel::Error, err.clone()),
                    (Some("end_turn"), None) => {}
                    (Some("cancelled"), None) => self.system(e, NoticeLevel::Info, "The turn was cancelled.".into()),
                    (Some(reason), None) => {
                        self.system(e, NoticeLevel::Info, format!("The turn ended: {}.", reason.replace('_', " ")))
                    }
                    (None, None) => {}
                }
            }
            RoomEvent::PermissionRequested { request_id, request } => {
                self.end_segment(e);
                let mut view = permission_view(request_id, request);
                if let Some(dir) = &self.cwd {
                    paths::make_relative(&mut view.title, dir);
                    view.text.iter_mut().for_each(|t| paths::make_relative(t, dir));
                }
                let i = self.push(format!("p{}", e.seq), e, View::Permission(view));
                self.permissions.insert(request_id.clone(), i);
            }
            RoomEvent::PermissionAnswered { request_id, option_id, display_name, .. } => {
                if let Some(&i) = self.permissions.get(request_id)
                    && let View::Permission(p) = self.touch(i, e)
                {
                    let name = p.options.iter().find(|o| &o.id == option_id).map(|o| o.name.clone());
                    p.answered = Some((display_name.clone(), name.unwrap_or_else(|| option_id.clone())));
                }
            }
            RoomEvent::PermissionCancelled { request_ids } => {
                for id in request_ids {
                    if let Some(&i) = self.permissions.get(id)
                        && let View::Permission(p) = self.touch(i, e)
                    {
                        p.cancelled = true;
                    }
                }
            }
            RoomEvent::SessionRestored { replayed_events, full_memory } => self.system(
                e,
                NoticeLevel::Info,
                if *full_memory {
                    "The agent's session was restored (full memory).".to_string()
                } else {
                    format!(
                        "The agent's session was restored (last {replayed_events} events replayed: it may not remember earlier work)."
                    )
                },
            ),
            RoomEvent::Presence { user_id, display_name, online } => {
                if !*online {
                    self.present.remove(user_id);
                    self.system(e, NoticeLevel::Info, format!("{display_name} left."));
                    self.left.insert(user_id.clone(), (self.items.len() - 1, e.created_at));
                    return;
                }
                if !self.present.insert(user_id.clone()) {
                    return;
                }
                match self.left.remove(user_id) {
                    Some((i, at)) if e.created_at - at < RECONNECT_WINDOW_MS => {
                        if let View::System { text, .. } = self.touch(i, e) {
                            *text = format!("{display_name} reconnected.");
                        }
                    }
                    _ => self.system(e, NoticeLevel::Info, format!("{display_name} joined.")),
                }
            }
            RoomEvent::Notice { level, message } => self.system(e, *level, message.clone()),
            RoomEvent::WorkspaceRenamed { display_name, name, .. } => {
                self.name = Some(name.clone());
                self.system(e, NoticeLevel::Info, format!("{display_name} renamed the workspace to “{name}”."));
            }
            RoomEvent::ThreadForked { display_name, from_title, seq, method, .. } => {
                let how = match method {
                    crate::model::ForkMethod::Session => "the agent forked its own session",
                    crate::model::ForkMethod::Transcript => {
                        "the agent gets the conversation as context with the first prompt"
                    }
                };
                self.system(
                    e,
                    NoticeLevel::Info,
                    format!("{display_name} continued “{from_title}” here from row {seq}: {how}."),
                );
            }
        }
    }

    fn session_event(&mut self, e: &RoomEntry, sender: Sender, payload: &Value) {
        let method = payload.get("method").and_then(Value::as_str);
        if sender == Sender::Client {
            match method {
                Some("initialize") => self.session.new_process(),
                Some("session/new" | "session/load") => {
                    if let Some(cwd) = payload
                        .pointer("/params/cwd")
                        .and_then(Value::as_str)
                        .filter(|c| c.starts_with('/'))
                    {
                        self.cwd = Some(cwd.to_string());
                    }
                }
                _ => {}
            }
            return;
        }
        // The answers that open a session or change its options say what may be chosen.
        if sender == Sender::Agent
            && method.is_none()
            && let Some(result) = payload.get("result").filter(|r| r.is_object())
        {
            if result.get("modes").is_some() || result.get("configOptions").is_some() {
                self.session.opened(result);
            }
            return;
        }
        // Our own requests show as chat; replies end turns; permission requests have their card.
        // sandbox-agent's word that the agent's process exited has the room's notice.
        if sender == Sender::Client
            || method.is_none()
            || method == Some("session/request_permission")
            || method == Some("_adapter/agent_exited")
        {
            return;
        }
        let method = method.unwrap_or_default();
        let params = payload.get("params").cloned().unwrap_or(Value::Null);
        let update = match AgentNotification::from_method_and_params(method, &params) {
            Ok(AgentNotification::SessionNotification(n)) => n.update,
            _ => match UsageView::lenient(&params) {
                Some(usage) => return self.session.set_usage(usage),
                None => return self.raw(e, method, payload),
            },
        };
        match update {
            SessionUpdate::AgentMessageChunk(chunk) => {
                let text = block_text(&chunk.content);
                self.thought = None;
                match self.agent {
                    Some(i) => {
                        if let View::Agent { text: t, .. } = self.touch(i, e) {
                            t.push_str(&text);
                        }
                    }
                    // Agents open a block with an empty chunk: no segment for nothing.
                    None if text.is_empty() => {}
                    None => {
                        let i =
                            self.push(format!("a{}", e.seq), e, View::Agent { text, done: false });
                        self.agent = Some(i);
                    }
                }
            }
            SessionUpdate::AgentThoughtChunk(chunk) => {
                let text = block_text(&chunk.content);
                if self.agent.is_some() {
                    self.end_segment(e);
                }
                match self.thought {
                    Some(i) => {
                        if let View::Thought { text: t } = self.touch(i, e) {
                            t.push_str(&text);
                        }
                    }
                    None if text.is_empty() => {}
                    None => {
                        self.thought =
                            Some(self.push(format!("t{}", e.seq), e, View::Thought { text }))
                    }
                }
            }
            SessionUpdate::ToolCall(call) => {
                let id = call.tool_call_id.0.to_string();
                let mut view = ToolView {
                    id: id.clone(),
                    title: self.rel(call.title),
                    kind: kind_name(&call.kind),
                    status: status_name(&call.status),
                    diffs: Vec::new(),
                    text: Vec::new(),
                    terminal: None,
                };
                add_content(&mut view, &call.content, self.cwd.as_deref());
                view.terminal_meta(call.meta.as_ref());
                view.raw_output(call.raw_output.as_ref());
                match self.tools.get(&id) {
                    Some(&i) => {
                        let slot = self.touch(i, e);
                        if let View::Tool(old) = slot
                            && view.terminal.is_none()
                        {
                            view.terminal = old.terminal.take();
                        }
                        *slot = View::Tool(view);
                    }
                    None => {
                        self.end_segment(e);
                        let i = self.push(format!("k{}", e.seq), e, View::Tool(view));
                        self.tools.insert(id, i);
                    }
                }
            }
            SessionUpdate::ToolCallUpdate(update) => {
                let id = update.tool_call_id.0.to_string();
                let i = match self.tools.get(&id) {
                    Some(&i) => i,
                    None => {
                        let view = ToolView {
                            id: id.clone(),
                            title: id.clone(),
                            kind: "other".into(),
                            status: "pending".into(),
                            diffs: Vec::new(),
                            text: Vec::new(),
                            terminal: None,
                        };
                        self.end_segment(e);
                        let i = self.push(format!("k{}", e.seq), e, View::Tool(view));
                        self.tools.insert(id, i);
                        i
                    }
                };
                let cwd = self.cwd.clone();
                if let View::Tool(view) = self.touch(i, e) {
                    let f = update.fields;
                    if let Some(mut t) = f.title {
                        if let Some(dir) = &cwd {
                            paths::make_relative(&mut t, dir);
                        }
                        view.title = t;
                    }
                    if let Some(k) = f.kind {
                        view.kind = kind_name(&k);
                    }
                    if let Some(s) = f.status {
                        view.status = status_name(&s);
                    }
                    if let Some(content) = f.content {
                        view.diffs.clear();
                        view.text.clear();
                        add_content(view, &content, cwd.as_deref());
                    }
                    view.terminal_meta(update.meta.as_ref());
                    view.raw_output(f.raw_output.as_ref());
                }
            }
            SessionUpdate::Plan(plan) => {
                let entries = plan
                    .entries
                    .into_iter()
                    .map(|p| PlanEntryView {
                        content: p.content,
                        status: serde_json::to_value(&p.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    })
                    .collect();
                match self.plan {
                    Some(i) => *self.touch(i, e) = View::Plan { entries },
                    None => {
                        self.end_segment(e);
                        self.plan =
                            Some(self.push(format!("l{}", e.seq), e, View::Plan { entries }))
                    }
                }
            }
            SessionUpdate::AvailableCommandsUpdate(u) => {
                self.session.commands = u
                    .available_commands
                    .into_iter()
                    .map(|c| CommandView {
                        name: c.name,
                        description: c.description,
                    })
                    .collect();
            }
            SessionUpdate::UsageUpdate(u) => self.session.set_usage(UsageView {
                used: Some(u.used),
                size: u.size,
                cost: u.cost.map(|c| (c.amount, c.currency)),
            }),
            SessionUpdate::SessionInfoUpdate(u) => match u.title {
                MaybeUndefined::Value(title) => {
                    self.session.title = Some(title).filter(|t| !t.is_empty())
                }
                MaybeUndefined::Null => self.session.title = None,
                MaybeUndefined::Undefined => {}
            },
            SessionUpdate::CurrentModeUpdate(u) => {
                let mode = u.current_mode_id.to_string();
                for o in &mut self.session.options {
                    if o.is_mode {
                        o.current = mode.clone();
                    }
                }
            }
            SessionUpdate::ConfigOptionUpdate(u) => self.session.set_options(&u.config_options),
            // The agent's replay of the conversation (`session/load`) and echoes of the prompt:
            // the room has them already.
            SessionUpdate::UserMessageChunk(_) => {}
            _ => self.raw(e, method, payload),
        }
    }

    /// `text` with paths relative to the working directory.
    fn rel(&self, text: String) -> String {
        match &self.cwd {
            Some(dir) => paths::relative(&text, dir).into_owned(),
            None => text,
        }
    }

    fn raw(&mut self, e: &RoomEntry, method: &str, payload: &Value) {
        let label = payload
            .pointer("/params/update/sessionUpdate")
            .and_then(Value::as_str)
            .map(|k| format!("{method} · {k}"))
            .unwrap_or_else(|| method.to_string());
        let json = serde_json::to_string_pretty(payload).unwrap_or_default();
        self.push(format!("r{}", e.seq), e, View::Raw { label, json });
    }
}

fn block_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::ResourceLink(l) => format!("[{}]({})", l.name, l.uri),
        _ => String::new(),
    }
}

/// Tool output without the `<system-reminder>` blocks Claude Code adds for the model (a Read's
/// result ends with one about malware): they are not for people.
fn without_reminders(text: &str) -> String {
    const OPEN: &str = "<system-reminder>";
    const CLOSE: &str = "</system-reminder>";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let Some(len) = rest[start..].find(CLOSE) else {
            break;
        };
        let before = rest[..start].trim_end();
        out.push_str(before);
        rest = rest[start + len + CLOSE.len()..].trim_start_matches([' ', '\n']);
        if !before.is_empty() && !rest.is_empty() {
            out.push('\n');
        }
    }
    out.push_str(rest);
    out
}

fn add_content(view: &mut ToolView, content: &[ToolCallContent], cwd: Option<&str>) {
    let rel = |text: String| match cwd {
        Some(dir) => paths::relative(&text, dir).into_owned(),
        None => text,
    };
    for c in content {
        match c {
            ToolCallContent::Diff(d) => view.diffs.push(DiffView::new(
                rel(d.path.display().to_string()),
                d.old_text.as_deref(),
                &d.new_text,
            )),
            ToolCallContent::Content(_) => view.text.extend(content_text(c).map(rel)),
            _ => {}
        }
    }
}

/// Paths of the working directory made relative in every text of these rows.
pub fn hide_paths(items: &mut [Item], dir: &str) {
    let fix = |s: &mut String| paths::make_relative(s, dir);
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

/// The text of a tool call's content block, for people (see [`without_reminders`]).
fn content_text(c: &ToolCallContent) -> Option<String> {
    match c {
        ToolCallContent::Content(c) => Some(without_reminders(&block_text(&c.content))),
        _ => None,
    }
}

fn kind_name(kind: &ToolKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

fn status_name(status: &ToolCallStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn permission_view(request_id: &str, request: &Value) -> PermissionView {
    match serde_json::from_value::<RequestPermissionRequest>(request.clone()) {
        Ok(r) => PermissionView {
            request_id: request_id.into(),
            tool_kind: r
                .tool_call
                .fields
                .kind
                .as_ref()
                .map(kind_name)
                .unwrap_or_default(),
            text: r
                .tool_call
                .fields
                .content
                .iter()
                .flatten()
                .filter_map(content_text)
                .filter(|t| !t.trim().is_empty())
                .collect(),
            title: r
                .tool_call
                .fields
                .title
                .unwrap_or_else(|| "The agent asks for permission".into()),
            options: r
                .options
                .into_iter()
                .map(|o| ChoiceView {
                    id: o.option_id.0.to_string(),
                    name: o.name,
                    kind: serde_json::to_value(o.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                })
                .collect(),
            answered: None,
            cancelled: false,
        },
        Err(_) => PermissionView {
            request_id: request_id.into(),
            title: "The agent asks for permission".into(),
            tool_kind: String::new(),
            text: Vec::new(),
            options: Vec::new(),
            answered: None,
            cancelled: false,
        },
    }
}

/// Folds the room log into the timeline.
pub fn build(entries: &[RoomEntry]) -> Timeline {
    fold(entries).timeline()
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
fn item_bytes(item: &Item) -> usize {
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

/// Folds the room log into its fold state (what the page ships).
pub fn fold(entries: &[RoomEntry]) -> Fold {
    let mut fold = Fold::default();
    for e in entries {
        fold.entry(e);
    }
    fold.changed.clear();
    fold
}

/// Texts of a row by the keys they are rendered under.
fn keyed_texts(item_key: &str, texts: &[String]) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionEvent;
    use serde_json::json;

    fn entry(seq: i64, event: RoomEvent) -> RoomEntry {
        RoomEntry {
            seq,
            created_at: seq * 10,
            event,
        }
    }

    /// An agent envelope as a room-log entry.
    fn agent(seq: i64, payload: Value) -> RoomEntry {
        entry(
            seq,
            RoomEvent::SessionEvent(SessionEvent {
                id: format!("e{seq}"),
                event_index: seq,
                session_id: "s".into(),
                created_at: 0,
                connection_id: "c".into(),
                sender: Sender::Agent,
                payload,
            }),
        )
    }

    fn update(seq: i64, update: Value) -> RoomEntry {
        agent(
            seq,
            json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "x", "update": update}}),
        )
    }

    fn chunk(seq: i64, kind: &str, text: &str) -> RoomEntry {
        update(
            seq,
            json!({"sessionUpdate": kind, "content": {"type": "text", "text": text}}),
        )
    }

    #[test]
    fn a_turn_shows_what_the_agent_did_in_the_order_it_did_it() {
        let entries = vec![
            entry(
                1,
                RoomEvent::ChatUser {
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                    text: "fix it".into(),
                    created_at: 1,
                    team_only: false,
                    images: Vec::new(),
                },
            ),
            entry(
                2,
                RoomEvent::TurnStarted {
                    prompt_seq: 1,
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                },
            ),
            chunk(3, "agent_thought_chunk", "hmm "),
            chunk(4, "agent_message_chunk", "Hello "),
            update(
                5,
                json!({"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "Edit", "kind": "edit", "status": "pending"}),
            ),
            chunk(6, "agent_thought_chunk", "ok"),
            update(
                7,
                json!({"sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": "completed",
                "content": [{"type": "diff", "path": "a.rs", "oldText": "1", "newText": "2"}]}),
            ),
            chunk(8, "agent_message_chunk", "world"),
            update(
                9,
                json!({"sessionUpdate": "plan", "entries": [{"content": "step", "priority": "high", "status": "pending"}]}),
            ),
            update(
                10,
                json!({"sessionUpdate": "available_commands_update", "availableCommands": []}),
            ),
        ];
        let t = build(&entries);
        assert_eq!(t.running.as_ref().map(|r| r.prompt_seq), Some(1));
        let views: Vec<&View> = t.items.iter().map(|i| &i.view).collect();
        assert!(matches!(views[0], View::Chat { text, .. } if text == "fix it"));
        assert!(matches!(views[1], View::Thought { text } if text == "hmm "));
        // Text before a tool call is a finished segment above it; text after it, a new one below.
        assert!(matches!(views[2], View::Agent { text, done: true } if text == "Hello "));
        match views[3] {
            View::Tool(tool) => {
                assert_eq!(
                    (tool.status.as_str(), tool.kind.as_str()),
                    ("completed", "edit")
                );
                assert_eq!(tool.diffs[0], DiffView::new("a.rs".into(), Some("1"), "2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(views[4], View::Thought { text } if text == "ok"));
        assert!(matches!(views[5], View::Agent { text, done: true } if text == "world"));
        assert!(matches!(views[6], View::Plan { entries } if entries[0].status == "pending"));
        assert_eq!(views.len(), 7, "the command list is no row: {views:?}");
        assert_eq!(t.items[5].rev, 9, "the segment was closed by seq 9");

        let mut more = entries.clone();
        more.push(entry(
            11,
            RoomEvent::TurnEnded {
                prompt_seq: 1,
                stop_reason: Some("end_turn".into()),
                error: None,
            },
        ));
        let t = build(&more);
        assert!(t.running.is_none());
        assert_eq!(
            t.items
                .iter()
                .flat_map(finished_markdown)
                .collect::<Vec<_>>(),
            vec![
                ("a4".to_string(), "Hello ".to_string()),
                ("a8".to_string(), "world".to_string())
            ]
        );
    }

    fn reply(seq: i64, result: Value) -> RoomEntry {
        agent(seq, json!({"jsonrpc": "2.0", "id": 1, "result": result}))
    }

    /// A request Huddle sent, as a room-log entry.
    fn client(seq: i64, method: &str, params: Value) -> RoomEntry {
        let mut e = agent(
            seq,
            json!({"jsonrpc": "2.0", "id": seq, "method": method, "params": params}),
        );
        if let RoomEvent::SessionEvent(ev) = &mut e.event {
            ev.sender = Sender::Client;
        }
        e
    }

    #[test]
    fn the_cost_never_goes_down_when_a_new_agent_process_starts() {
        let usage = |seq, amount: f64| {
            update(
                seq,
                json!({"sessionUpdate": "usage_update", "used": 10, "size": 100,
                    "cost": {"amount": amount, "currency": "USD"}}),
            )
        };
        let cost = |f: &Fold| f.session().usage.as_ref().unwrap().cost.clone().unwrap().0;
        let mut f = fold(&[
            client(1, "initialize", json!({})),
            usage(2, 0.5),
            usage(3, 0.7),
        ]);
        assert!((cost(&f) - 0.7).abs() < 1e-9);
        // After a Stop the session is reopened by a new process, which counts from nothing.
        f.apply(&client(4, "initialize", json!({})));
        f.apply(&usage(5, 0.08));
        assert!((cost(&f) - 0.78).abs() < 1e-9, "{}", cost(&f));
        f.apply(&usage(6, 0.1));
        assert!((cost(&f) - 0.8).abs() < 1e-9);
    }

    #[test]
    fn paths_show_relative_to_the_working_directory_and_viewers_get_none() {
        let dir = "/data/workspaces/w1";
        let entries = vec![
            client(1, "session/new", json!({"cwd": dir, "mcpServers": []})),
            update(
                2,
                json!({"sessionUpdate": "tool_call", "toolCallId": "t", "title": "Edit /data/workspaces/w1/notes.md",
                    "kind": "edit", "status": "completed",
                    "content": [{"type": "diff", "path": "/data/workspaces/w1/notes.md",
                        "oldText": "a\nTeh plan\nb\n", "newText": "a\nThe plan\nb\n"}]}),
            ),
            chunk(
                3,
                "agent_message_chunk",
                "I fixed /data/workspaces/w1/notes.md",
            ),
        ];
        let f = fold(&entries);
        let View::Tool(tool) = &f.items()[0].view else {
            panic!()
        };
        assert_eq!(tool.title, "Edit notes.md");
        assert_eq!(tool.diffs[0].path, "notes.md");
        assert_eq!(tool.diffs[0].counts(), (1, 1));
        assert_eq!(f.cwd(), Some(dir));
        let viewers = f.without_paths();
        assert_eq!(viewers.cwd(), None);
        assert!(!serde_json::to_string(&viewers).unwrap().contains(dir));
        // What viewers are streamed holds no path of it either.
        let hidden = entries[0].without_paths(dir).unwrap();
        assert!(!serde_json::to_string(&hidden).unwrap().contains(dir));
        let hidden = entries[1].without_paths(dir).unwrap();
        assert!(!serde_json::to_string(&hidden).unwrap().contains(dir));
    }

    #[test]
    fn output_sent_only_as_raw_output_is_shown() {
        let f = fold(&[
            update(
                1,
                json!({"sessionUpdate": "tool_call", "toolCallId": "c", "title": "ls", "kind": "execute",
                    "status": "in_progress", "_meta": {"terminal_info": {"terminal_id": "c"}}}),
            ),
            update(
                2,
                json!({"sessionUpdate": "tool_call_update", "toolCallId": "c", "status": "completed",
                    "rawOutput": {"stdout": "a\nb\n", "stderr": "", "aggregated_output": "a\nb\n",
                        "exit_code": 0, "formatted_output": "a\nb"},
                    "_meta": {"terminal_exit": {"terminal_id": "c", "exit_code": 0, "signal": null}}}),
            ),
        ]);
        let View::Tool(tool) = &f.items()[0].view else {
            panic!()
        };
        let term = tool.terminal.as_ref().unwrap();
        assert_eq!(term.output, "a\nb\n");
        assert_eq!(term.exit.as_deref(), Some("exit 0"));
    }

    #[test]
    fn an_open_question_is_known_until_it_is_answered() {
        let ask = |seq, id: &str| {
            entry(
                seq,
                RoomEvent::PermissionRequested {
                    request_id: id.into(),
                    request: json!({"sessionId": "s", "toolCall": {"toolCallId": id}, "options": []}),
                },
            )
        };
        let mut f = fold(&[ask(1, "r1"), ask(2, "r2")]);
        assert_eq!(f.open_question(), Some("p1"));
        f.apply(&entry(
            3,
            RoomEvent::PermissionAnswered {
                request_id: "r1".into(),
                option_id: "x".into(),
                user_id: "u".into(),
                display_name: "Ada".into(),
            },
        ));
        assert_eq!(f.open_question(), Some("p2"));
        f.apply(&entry(
            4,
            RoomEvent::PermissionCancelled {
                request_ids: vec!["r2".into()],
            },
        ));
        assert_eq!(f.open_question(), None);
    }

    #[test]
    fn joining_again_without_leaving_adds_no_row() {
        let presence = |seq, online| {
            entry(
                seq,
                RoomEvent::Presence {
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                    online,
                },
            )
        };
        // The server restarted: no leave was logged, and the join that follows is no row.
        let f = fold(&[presence(1, true), presence(2, true)]);
        assert_eq!(f.items().len(), 1);
    }

    #[test]
    fn what_the_agent_says_about_its_session_shows_with_the_room_not_as_rows() {
        let select = |current: &str| {
            json!([{"id": "model", "name": "Model", "type": "select", "currentValue": current,
                "options": [{"value": "fast", "name": "Fast"}, {"value": "smart", "name": "Smart"}]}])
        };
        let entries = vec![
            reply(
                1,
                json!({"sessionId": "s1", "configOptions": select("fast"),
                "modes": {"currentModeId": "default", "availableModes": [
                    {"id": "default", "name": "Default"}, {"id": "plan", "name": "Plan"}]}}),
            ),
            update(
                2,
                json!({"sessionUpdate": "available_commands_update", "availableCommands": [
                {"name": "compact", "description": "Compact the conversation"}]}),
            ),
            update(
                3,
                json!({"sessionUpdate": "usage_update", "used": 12345, "size": 200000,
                "cost": {"amount": 0.034, "currency": "USD"}}),
            ),
            update(
                4,
                json!({"sessionUpdate": "session_info_update", "title": "Fix the login bug"}),
            ),
            update(
                5,
                json!({"sessionUpdate": "current_mode_update", "currentModeId": "plan"}),
            ),
            update(
                6,
                json!({"sessionUpdate": "config_option_update", "configOptions": select("smart")}),
            ),
            update(
                7,
                json!({"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "old"}}),
            ),
        ];
        let t = build(&entries);
        assert!(t.items.is_empty(), "{:?}", t.items);
        let s = &t.session;
        assert_eq!(s.title.as_deref(), Some("Fix the login bug"));
        assert_eq!(s.commands[0].name, "compact");
        assert_eq!(
            s.usage.as_ref().unwrap().label(),
            "Context 12.3k / 200.0k (6%) · 0.03 USD"
        );
        // Claude's adapter sends `used: null` (the schema wants a number): still no raw row.
        let mut more = entries.clone();
        more.push(update(
            8,
            json!({"sessionUpdate": "usage_update", "used": null, "size": 200000,
                "cost": {"amount": 0.05, "currency": "USD"}}),
        ));
        let t2 = build(&more);
        assert!(t2.items.is_empty(), "{:?}", t2.items);
        assert_eq!(
            t2.session.usage.as_ref().unwrap().label(),
            "Context window 200.0k · 0.05 USD"
        );
        let ids: Vec<(&str, &str)> = s
            .options
            .iter()
            .map(|o| (o.id.as_str(), o.current.as_str()))
            .collect();
        assert_eq!(ids, vec![(MODE_OPTION, "plan"), ("model", "smart")]);
        assert_eq!(s.options[0].choices[1], ("plan".into(), "Plan".into()));
    }

    #[test]
    fn a_long_room_ships_its_tail_and_pages_older_rows_in() {
        // 200 turns, each a prompt and a streamed reply of 50 chunks.
        let mut entries: Vec<RoomEntry> = Vec::new();
        for t in 0..200 {
            let prompt_seq = entries.len() as i64 + 1;
            entries.push(entry(
                prompt_seq,
                RoomEvent::ChatUser {
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                    text: format!("prompt {t}"),
                    created_at: 0,
                    team_only: false,
                    images: Vec::new(),
                },
            ));
            entries.push(entry(
                prompt_seq + 1,
                RoomEvent::TurnStarted {
                    prompt_seq,
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                },
            ));
            for c in 0..50 {
                let seq = entries.len() as i64 + 1;
                entries.push(chunk(seq, "agent_message_chunk", &format!("word{c} ")));
            }
            if t < 199 {
                let seq = entries.len() as i64 + 1;
                entries.push(entry(
                    seq,
                    RoomEvent::TurnEnded {
                        prompt_seq,
                        stop_reason: Some("end_turn".into()),
                        error: None,
                    },
                ));
            }
        }
        let whole = fold(&entries);
        let (tail, cut) = whole.clone().tail(8, 200, 4096);
        assert!(cut > 0 && tail.items().len() < whole.items().len());
        assert_eq!(cut + tail.items().len(), whole.items().len());
        assert_eq!(tail.items(), &whole.items()[cut..]);
        // The running turn goes on in the tail as in the whole.
        let more = chunk(entries.len() as i64 + 1, "agent_message_chunk", "more");
        let (mut a, mut b) = (whole.clone(), tail.clone());
        a.apply(&more);
        let changed = b.apply(&more);
        assert_eq!(changed, vec![b.items().len() - 1]);
        assert_eq!(a.items().last(), b.items().last());
        // Older rows page in, contiguous, down to the first.
        let mut before = cut;
        let mut pages = 0;
        while before > 0 {
            let (start, items) = whole.page(before, 100, 4096);
            assert!(start < before && items.len() == before - start);
            assert_eq!(items, whole.items()[start..before].to_vec());
            before = start;
            pages += 1;
        }
        assert!(pages > 1);
    }

    #[test]
    fn a_quick_leave_and_join_is_one_reconnected_row() {
        let presence = |seq: i64, at: i64, online: bool| RoomEntry {
            seq,
            created_at: at,
            event: RoomEvent::Presence {
                user_id: "u".into(),
                display_name: "Ada".into(),
                online,
            },
        };
        let texts = |entries: &[RoomEntry]| -> Vec<String> {
            build(entries)
                .items
                .into_iter()
                .filter_map(|i| match i.view {
                    View::System { text, .. } => Some(text),
                    _ => None,
                })
                .collect()
        };
        let quick = [
            presence(1, 0, true),
            presence(2, 1_000, false),
            presence(3, 3_000, true),
        ];
        assert_eq!(texts(&quick), ["Ada joined.", "Ada reconnected."]);
        let slow = [
            presence(1, 0, true),
            presence(2, 1_000, false),
            presence(3, 90_000, true),
        ];
        assert_eq!(texts(&slow), ["Ada joined.", "Ada left.", "Ada joined."]);
    }

    #[test]
    fn claude_codes_reminders_for_the_model_are_not_shown() {
        let read = "```\n     1→Teh plan\n     2→\n\n<system-reminder>\nWhenever you read a file...\n</system-reminder>\n```";
        assert_eq!(
            without_reminders(read),
            "```\n     1→Teh plan\n     2→\n```"
        );
        assert_eq!(without_reminders("plain"), "plain");
        assert_eq!(
            without_reminders("<system-reminder>x</system-reminder>"),
            ""
        );
        // An unclosed one is left as it is.
        assert_eq!(
            without_reminders("a <system-reminder> b"),
            "a <system-reminder> b"
        );
    }

    #[test]
    fn permissions_queue_presence_and_unknown_envelopes() {
        let request = json!({"sessionId": "x", "toolCall": {"toolCallId": "p", "title": "Run rm"},
            "options": [{"optionId": "allow", "name": "Allow once", "kind": "allow_once"}]});
        let echo = RoomEvent::SessionEvent(SessionEvent {
            id: "e".into(),
            event_index: 1,
            session_id: "s".into(),
            created_at: 0,
            connection_id: "c".into(),
            sender: Sender::Agent,
            payload: json!({"jsonrpc": "2.0", "method": "mock/echo", "params": {"message": {}}}),
        });
        let entries = vec![
            entry(
                1,
                RoomEvent::ChatUser {
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                    text: "a".into(),
                    created_at: 1,
                    team_only: false,
                    images: Vec::new(),
                },
            ),
            entry(
                2,
                RoomEvent::TurnStarted {
                    prompt_seq: 1,
                    user_id: "u".into(),
                    display_name: "Ada".into(),
                },
            ),
            entry(
                3,
                RoomEvent::ChatUser {
                    user_id: "b".into(),
                    display_name: "Bob".into(),
                    text: "later".into(),
                    created_at: 3,
                    team_only: false,
                    images: Vec::new(),
                },
            ),
            entry(
                4,
                RoomEvent::PromptQueued {
                    prompt_seq: 3,
                    user_id: "b".into(),
                    display_name: "Bob".into(),
                    position: 1,
                },
            ),
            entry(
                5,
                RoomEvent::PermissionRequested {
                    request_id: "r1".into(),
                    request,
                },
            ),
            entry(
                6,
                RoomEvent::PermissionAnswered {
                    request_id: "r1".into(),
                    option_id: "allow".into(),
                    user_id: "b".into(),
                    display_name: "Bob".into(),
                },
            ),
            entry(7, echo),
            entry(
                8,
                RoomEvent::Presence {
                    user_id: "b".into(),
                    display_name: "Bob".into(),
                    online: false,
                },
            ),
        ];
        let t = build(&entries);
        assert_eq!(
            t.queue,
            vec![Waiting {
                user_id: "b".into(),
                seq: 3,
                display_name: "Bob".into(),
                text: "later".into()
            }]
        );
        let perm = t
            .items
            .iter()
            .find_map(|i| match &i.view {
                View::Permission(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(perm.title, "Run rm");
        assert_eq!(perm.answered, Some(("Bob".into(), "Allow once".into())));
        assert!(
            t.items
                .iter()
                .any(|i| matches!(&i.view, View::Raw { label, .. } if label == "mock/echo"))
        );
    }
}
