//! What real agents need from the room: they hear who speaks, and what the team said to itself.

mod common;

use std::time::Duration;

use common::*;
use huddle::model::RoomEvent;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

fn said(e: &huddle::model::RoomEntry) -> Option<String> {
    match &e.event {
        RoomEvent::SessionEvent(ev) => {
            let u = &ev.payload["params"]["update"];
            (u["sessionUpdate"] == "agent_message_chunk")
                .then(|| u["content"]["text"].as_str().unwrap_or("").into())
        }
        _ => None,
    }
}

#[tokio::test]
async fn the_agent_hears_who_speaks_and_team_only_talk_comes_as_context_with_the_next_prompt() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;

    // A team-only message is in the room, and is not a prompt: no turn starts.
    let (status, body) = app
        .post(
            "prompt",
            json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob",
                "text": "let's keep sqlite", "teamOnly": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let note = sse.upto(body["seq"].as_i64().unwrap()).await;
    assert!(matches!(&note.last().unwrap().event,
        RoomEvent::ChatUser { team_only: true, display_name, .. } if display_name == "Bob"));
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(info["status"], "idle");

    // The next prompt names its author, and carries what the team said meanwhile.
    app.prompt(&ws, "ada", "echo").await;
    let turn = sse.until(is_turn_end).await;
    assert!(
        !turn[..turn.len() - 1].iter().any(is_turn_end),
        "one turn: the team-only message started none"
    );
    let blocks: Vec<String> = serde_json::from_str(&turn.iter().find_map(said).unwrap()).unwrap();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert!(blocks[0].contains("Bob: let's keep sqlite"), "{blocks:?}");
    assert!(blocks[1].contains("ada says"), "{blocks:?}");
    assert_eq!(blocks[2], "echo");

    // Once carried, a note is not sent again.
    app.prompt(&ws, "ada", "echo").await;
    let turn = sse.until(is_turn_end).await;
    let blocks: Vec<String> = serde_json::from_str(&turn.iter().find_map(said).unwrap()).unwrap();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn members_change_the_agents_mode_and_model_for_the_room() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    let option = |config: &str, value: &str| {
        json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada",
            "configId": config, "value": value})
    };
    // Before the session is open there is nothing to change.
    let (status, body) = app.post("option", option("model", "smart")).await;
    assert_eq!(status, 409, "{body}");
    app.prompt(&ws, "ada", "hello").await;
    sse.until(is_turn_end).await;

    let (status, body) = app.post("option", option("model", "smart")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post("option", option("_mode", "plan")).await;
    assert_eq!(status, 200, "{body}");
    let got = sse
        .until(|e| matches!(&e.event, RoomEvent::Notice { message, .. } if message.contains("mode to plan")))
        .await;
    let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
    let entries: Vec<huddle::model::RoomEntry> =
        serde_json::from_value(snapshot["entries"].clone()).unwrap();
    let facts = huddle::timeline::build(&entries).session;
    let current: Vec<(String, String)> = facts
        .options
        .iter()
        .map(|o| (o.id.clone(), o.current.clone()))
        .collect();
    assert_eq!(
        current,
        vec![
            ("_mode".to_string(), "plan".to_string()),
            ("model".to_string(), "smart".to_string())
        ]
    );
    assert!(got.iter().any(|e| matches!(&e.event,
        RoomEvent::Notice { message, .. } if message == "ada set the agent's model to smart.")));
    assert_eq!(facts.commands.len(), 2);
    assert_eq!(facts.title.as_deref(), Some("hello"));
    assert!(facts.usage.is_some());

    // The agent's refusal is a clear 400; viewers cannot change anything.
    let (status, body) = app.post("option", option("model", "huge")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("refused"));
    let viewer = app
        .post(
            "tokens/create",
            json!({"workspaceId": ws, "name": "watcher", "role": "viewer"}),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = app
        .post_as(
            &viewer,
            "option",
            json!({"workspaceId": ws, "configId": "model", "value": "fast"}),
        )
        .await;
    assert_eq!(status, 403);
    app.stop().await;
    sa.stop().await;
}
