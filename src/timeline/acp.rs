//! The agent's ACP envelopes into rows: one arm per session update, read with the protocol's own
//! types.

use agent_client_protocol_schema::MaybeUndefined;
use agent_client_protocol_schema::v1::{
    AgentNotification, ContentBlock, PermissionOptionKind, PlanEntryStatus,
    RequestPermissionRequest, SessionUpdate, ToolCallContent, ToolCallStatus, ToolKind,
};
use serde_json::Value;

use super::*;
use crate::model::{RoomEntry, Sender};

impl Fold {
    pub(super) fn session_event(&mut self, e: &RoomEntry, sender: Sender, payload: &Value) {
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
                            status: ToolStatus::Pending,
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
                            crate::paths::make_relative(&mut t, dir);
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
                        status: plan_status(&p.status),
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
    pub(super) fn rel(&self, text: String) -> String {
        match &self.cwd {
            Some(dir) => crate::paths::relative(&text, dir).into_owned(),
            None => text,
        }
    }

    pub(super) fn raw(&mut self, e: &RoomEntry, method: &str, payload: &Value) {
        let label = payload
            .pointer("/params/update/sessionUpdate")
            .and_then(Value::as_str)
            .map(|k| format!("{method} · {k}"))
            .unwrap_or_else(|| method.to_string());
        let json = serde_json::to_string_pretty(payload).unwrap_or_default();
        self.push(format!("r{}", e.seq), e, View::Raw { label, json });
    }
}

pub(super) fn block_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::ResourceLink(l) => format!("[{}]({})", l.name, l.uri),
        _ => String::new(),
    }
}

/// Tool output without the `<system-reminder>` blocks Claude Code adds for the model (a Read's
/// result ends with one about malware): they are not for people.
pub(super) fn without_reminders(text: &str) -> String {
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

pub(super) fn add_content(view: &mut ToolView, content: &[ToolCallContent], cwd: Option<&str>) {
    let rel = |text: String| match cwd {
        Some(dir) => crate::paths::relative(&text, dir).into_owned(),
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

/// The text of a tool call's content block, for people (see [`without_reminders`]).
pub(super) fn content_text(c: &ToolCallContent) -> Option<String> {
    match c {
        ToolCallContent::Content(c) => Some(without_reminders(&block_text(&c.content))),
        _ => None,
    }
}

pub(super) fn kind_name(kind: &ToolKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

pub(super) fn status_name(status: &ToolCallStatus) -> ToolStatus {
    match status {
        ToolCallStatus::InProgress => ToolStatus::InProgress,
        ToolCallStatus::Completed => ToolStatus::Completed,
        ToolCallStatus::Failed => ToolStatus::Failed,
        _ => ToolStatus::Pending,
    }
}

fn plan_status(status: &PlanEntryStatus) -> PlanStatus {
    match status {
        PlanEntryStatus::InProgress => PlanStatus::InProgress,
        PlanEntryStatus::Completed => PlanStatus::Completed,
        _ => PlanStatus::Pending,
    }
}

fn choice_kind(kind: PermissionOptionKind) -> ChoiceKind {
    match kind {
        PermissionOptionKind::AllowAlways => ChoiceKind::AllowAlways,
        PermissionOptionKind::RejectOnce => ChoiceKind::RejectOnce,
        PermissionOptionKind::RejectAlways => ChoiceKind::RejectAlways,
        _ => ChoiceKind::AllowOnce,
    }
}

pub(super) fn permission_view(request_id: &str, request: &Value) -> PermissionView {
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
                    kind: choice_kind(o.kind),
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
