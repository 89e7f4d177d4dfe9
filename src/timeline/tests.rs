//! The fold, entry by entry.

use super::acp::without_reminders;
use super::*;
use crate::model::SessionEvent;
use crate::model::{RoomEvent, Sender};
use serde_json::Value;
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
                mentions: Vec::new(),
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
    assert!(matches!(views[6], View::Plan { entries } if entries[0].status == PlanStatus::Pending));
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
                mentions: Vec::new(),
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
                mentions: Vec::new(),
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
                mentions: Vec::new(),
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
