//! A thread taken out of Huddle: as Markdown for people to read (the room's rows in the order they
//! happened) and as JSONL for programs (one line per room-log entry).

use std::fmt::Write;

use serde::Serialize;

use crate::model::{RoomEntry, RoomEvent, Sender};
use crate::timeline::{self, LineKind, View};

/// A room-log time (ms since the Unix epoch) as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// One line of the JSONL export.
#[derive(Serialize)]
struct Line<'a> {
    seq: i64,
    time: String,
    author: String,
    kind: &'a str,
    data: serde_json::Value,
}

/// Who an entry is from: a person's id and name, `agent`, or `huddle` for the room's own notes
/// and what Huddle sent the agent.
fn author(event: &RoomEvent) -> String {
    match event {
        RoomEvent::ChatUser {
            user_id,
            display_name,
            ..
        }
        | RoomEvent::PermissionAnswered {
            user_id,
            display_name,
            ..
        }
        | RoomEvent::WorkspaceRenamed {
            user_id,
            display_name,
            ..
        }
        | RoomEvent::ThreadForked {
            user_id,
            display_name,
            ..
        } => format!("{display_name} ({user_id})"),
        RoomEvent::PromptQueued { display_name, .. }
        | RoomEvent::TurnStarted { display_name, .. }
        | RoomEvent::QueueCleared { display_name, .. }
        | RoomEvent::TurnCancelling { display_name, .. }
        | RoomEvent::PromptRemoved { display_name, .. } => display_name.clone(),
        RoomEvent::SessionEvent(e) if e.sender == Sender::Agent => "agent".into(),
        _ => "huddle".into(),
    }
}

/// The entries as JSONL: `{seq, time, author, kind, data}` per line.
pub fn jsonl(entries: &[RoomEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let mut v = serde_json::to_value(&e.event).unwrap_or_default();
        let line = Line {
            seq: e.seq,
            time: rfc3339(e.created_at),
            author: author(&e.event),
            kind: e.event.kind(),
            data: v
                .get_mut("data")
                .map(serde_json::Value::take)
                .unwrap_or_default(),
        };
        if let Ok(json) = serde_json::to_string(&line) {
            out.push_str(&json);
            out.push('\n');
        }
    }
    out
}

/// The thread as Markdown: who said what, the agent's text, tool calls with their diffs and
/// output, plans, and the agent's questions with who answered what, in order.
pub fn markdown(workspace: &str, thread: &str, entries: &[RoomEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {thread}\n\n_{workspace}_ · exported from Huddle\n");
    for item in timeline::build(entries).items {
        let at = rfc3339(item.at);
        match item.view {
            View::Chat {
                display_name,
                text,
                team_only,
                images,
                ..
            } => {
                let to = if team_only { " (to the team)" } else { "" };
                let _ = writeln!(out, "## {display_name}{to} · {at}\n\n{text}\n");
                if !images.is_empty() {
                    let _ = writeln!(out, "_{} image(s) attached_\n", images.len());
                }
            }
            View::Agent { text, .. } => {
                let _ = writeln!(out, "### Agent · {at}\n\n{text}\n");
            }
            View::Thought { text } => {
                let _ = writeln!(out, "> _Thinking:_ {}\n", text.replace('\n', "\n> "));
            }
            View::Tool(tool) => {
                let _ = writeln!(
                    out,
                    "#### Tool: {} ({}, {})\n",
                    tool.title,
                    tool.kind,
                    tool.status.label()
                );
                for diff in &tool.diffs {
                    let created = if diff.created { " (new file)" } else { "" };
                    let _ = writeln!(out, "`{}`{created}\n\n```diff", diff.path);
                    for hunk in &diff.hunks {
                        for line in &hunk.lines {
                            let mark = match line.kind {
                                LineKind::Context => ' ',
                                LineKind::Removed => '-',
                                LineKind::Added => '+',
                            };
                            let _ = writeln!(out, "{mark}{}", line.text.trim_end_matches('\n'));
                        }
                    }
                    out.push_str("```\n\n");
                }
                for text in &tool.text {
                    let _ = writeln!(out, "{text}\n");
                }
                if let Some(terminal) = &tool.terminal {
                    let _ = writeln!(out, "```\n{}\n```", terminal.output.trim_end());
                    if let Some(exit) = &terminal.exit {
                        let _ = writeln!(out, "_{exit}_");
                    }
                    out.push('\n');
                }
            }
            View::Plan { entries } => {
                out.push_str("#### Plan\n\n");
                for e in entries {
                    let mark = if e.status == crate::timeline::PlanStatus::Completed {
                        "x"
                    } else {
                        " "
                    };
                    let _ = writeln!(out, "- [{mark}] {} ({})", e.content, e.status.as_str());
                }
                out.push('\n');
            }
            View::Permission(p) => {
                let _ = writeln!(out, "#### The agent asks: {}\n", p.title);
                for text in &p.text {
                    let _ = writeln!(out, "{text}\n");
                }
                let options: Vec<&str> = p.options.iter().map(|o| o.name.as_str()).collect();
                let _ = writeln!(out, "Options: {}\n", options.join(" · "));
                match (&p.answered, p.cancelled) {
                    (Some((who, choice)), _) => {
                        let _ = writeln!(out, "**{who}** answered **{choice}**.\n");
                    }
                    (None, true) => out.push_str("_Withdrawn by the agent._\n\n"),
                    (None, false) => out.push_str("_Not answered yet._\n\n"),
                }
            }
            View::System { text, .. } => {
                let _ = writeln!(out, "_{text}_ ({at})\n");
            }
            View::Raw { label, json } => {
                let _ = writeln!(
                    out,
                    "<details><summary>{label}</summary>\n\n```json\n{json}\n```\n</details>\n"
                );
            }
        }
    }
    out
}
