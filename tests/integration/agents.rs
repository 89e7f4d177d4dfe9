//! What real agents need from the room: they hear who speaks, and what the team said to itself.

use std::time::Duration;

use crate::common::*;
use huddle::model::RoomEvent;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

use crate::common::agent_said as said;

#[tokio::test]
async fn the_agent_hears_who_speaks_and_team_only_talk_comes_as_context_with_the_next_prompt() {
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;

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
    assert_ne!(info["status"], "working", "no turn runs");

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
    let option = |config: &str, value: &str| {
        json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada",
            "configId": config, "value": value})
    };
    // Chosen before the agent's session is open (nobody is in the room yet), an option is kept
    // and set when the session opens.
    let (status, body) = app.post("option", option("model", "smart")).await;
    assert_eq!(status, 200, "{body}");
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "hello").await;
    sse.until(is_turn_end).await;

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
    let notices: Vec<&str> = entries
        .iter()
        .filter_map(|e| match &e.event {
            RoomEvent::Notice { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notices.contains(&"Ada set the agent's model to smart."),
        "{notices:?}"
    );
    assert!(got.iter().any(|e| matches!(&e.event,
        RoomEvent::Notice { message, .. } if message == "Ada set the agent's mode to plan.")));
    assert_eq!(facts.commands.len(), 14);
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

    // A choice a new session refuses: the room says so, and the choice is dropped (the next
    // session is not asked again). Chosen while the room sleeps, it is set when it next opens.
    app.stop().await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let (status, body) = app.post("option", option("model", "huge")).await;
    assert_eq!(status, 200, "kept for the session about to open: {body}");
    let mut sse = app.events(&ws, "ada", None).await;
    sse.until(|e| {
        matches!(&e.event, RoomEvent::Notice { message, .. }
        if message.contains("did not take the room's model (huge)"))
    })
    .await;
    let state = huddle::store::room_state::load(&pool, &first_thread(&pool, &ws).await)
        .await
        .unwrap();
    assert!(!state.options.contains_key("model"), "{:?}", state.options);
    assert_eq!(state.options.get("_mode").map(String::as_str), Some("plan"));
    drop(sse);
    app.stop().await;
    sa.stop().await;
}

/// Waits for the next permission request and answers it with `option`.
async fn answer(app: &TestApp, ws: &str, sse: &mut Sse, option: &str) -> serde_json::Value {
    let asked = sse
        .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let (request_id, request) = match &asked.last().unwrap().event {
        RoomEvent::PermissionRequested {
            request_id,
            request,
        } => (request_id.clone(), request.clone()),
        _ => unreachable!(),
    };
    let (status, body) = app
        .post(
            "permission",
            json!({"workspaceId": ws, "userId": "ada", "requestId": request_id, "optionId": option}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    request
}

#[tokio::test]
async fn claude_and_codex_shaped_permissions_and_terminal_output_show_as_the_agents_mean_them() {
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;

    // Claude: an integer request id, options by kind; "always" is answered like any other.
    app.prompt(&ws, "ada", "claude permission").await;
    answer(&app, &ws, &mut sse, "allow_always").await;
    let turn = sse.until(is_turn_end).await;
    assert!(
        turn.iter()
            .filter_map(said)
            .any(|t| t == "claude: allow_always")
    );

    // Codex: the request comes before its tool call; "abort" ends the turn cancelled.
    app.prompt(&ws, "ada", "codex permission").await;
    answer(&app, &ws, &mut sse, "abort").await;
    let turn = sse.until(is_turn_end).await;
    assert!(matches!(&turn.last().unwrap().event,
        RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "cancelled"));

    // A terminal's output streams into its card (Huddle asks for it at initialize), and the
    // call's fenced text is rendered as markdown once the call ends.
    app.prompt(&ws, "ada", "terminal").await;
    sse.until(is_turn_end).await;
    let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
    let entries: Vec<huddle::model::RoomEntry> =
        serde_json::from_value(snapshot["entries"].clone()).unwrap();
    let timeline = huddle::timeline::build(&entries);
    let choices: Vec<Vec<String>> = timeline
        .items
        .iter()
        .filter_map(|i| match &i.view {
            huddle::timeline::View::Permission(p) => Some(
                p.options
                    .iter()
                    .map(|o| o.kind.as_str().to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        choices,
        vec![
            vec!["allow_always", "allow_once", "reject_once"],
            vec!["allow_once", "reject_once"]
        ]
    );
    let (key, tool) = timeline
        .items
        .iter()
        .find_map(|i| match &i.view {
            huddle::timeline::View::Tool(t) if t.title == "`ls`" => Some((i.key.clone(), t)),
            _ => None,
        })
        .expect("the terminal's card");
    let terminal = tool.terminal.as_ref().expect("terminal output");
    assert_eq!(terminal.output, "Cargo.toml\nsrc\n");
    assert_eq!(terminal.exit.as_deref(), Some("exit 0"));
    let rendered: Vec<(String, String)> =
        serde_json::from_value(snapshot["rendered"].clone()).unwrap();
    let html = rendered
        .iter()
        .find(|(k, _)| *k == huddle::timeline::ToolView::text_key(&key, 0))
        .map(|(_, h)| h.clone())
        .expect("the tool's text rendered");
    assert!(
        html.contains("<pre><code") && html.contains("Cargo.toml"),
        "{html}"
    );
    assert!(!html.contains("```"), "{html}");
    // Nothing of this is a raw JSON row.
    assert_no_raw_rows(&timeline);
    app.stop().await;
    sa.stop().await;
}

/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[tokio::test]
async fn images_go_to_the_agent_as_image_blocks_and_are_served_to_members_only() {
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    let prompt = |images: serde_json::Value| json!({"workspaceId": ws, "userId": "ada", "text": "look at this", "images": images});
    let (status, body) = app
        .post(
            "prompt",
            prompt(json!([{"mimeType": "image/png", "data": PNG}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let turn = sse.until(is_turn_end).await;
    let image = turn
        .iter()
        .find_map(|e| match &e.event {
            RoomEvent::ChatUser { images, .. } => images.first().cloned(),
            _ => None,
        })
        .expect("the message carries its image");
    let said: String = turn.iter().filter_map(said).collect();
    assert!(
        said.starts_with("I see 1 image(s): image/png 70 bytes."),
        "{said}"
    );

    // Members get it (as a PNG); nobody else does.
    let url = format!("{}{}", app.base, huddle::model::image_url(&ws, &image.id));
    let token = app.token(&ws, "ada").await;
    let res = app.anon.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().len(), 70);
    assert_eq!(app.anon.get(&url).send().await.unwrap().status(), 401);
    let other = app.create("pi").await;
    let stranger = app.token(&other, "eve").await;
    let res = app
        .anon
        .get(&url)
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Clear errors: too many, not an image type, not base64, too large; bytes that are not the
    // image they are said to be (nothing, an SVG or an HTML page said to be a PNG, a PNG said to
    // be a JPEG).
    let five = serde_json::Value::Array(vec![json!({"mimeType": "image/png", "data": PNG}); 5]);
    let big = "A".repeat(1_400_000);
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let svg = b64(br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#);
    let html = b64(b"<!DOCTYPE html><html><script>alert(1)</script></html>");
    for (images, status) in [
        (json!([{"mimeType": "image/png", "data": ""}]), 400),
        (json!([{"mimeType": "image/png", "data": svg}]), 400),
        (json!([{"mimeType": "image/png", "data": html}]), 400),
        (json!([{"mimeType": "image/jpeg", "data": PNG}]), 400),
        (five, 400),
        (json!([{"mimeType": "text/html", "data": PNG}]), 400),
        (
            json!([{"mimeType": "image/png", "data": "not base64!"}]),
            400,
        ),
        (json!([{"mimeType": "image/png", "data": big}]), 413),
    ] {
        let (got, body) = app.post("prompt", prompt(images)).await;
        assert_eq!(got, status, "{body}");
    }
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn an_agent_that_takes_no_images_is_said_so() {
    let (pool, _) = fresh_db().await;
    let sa = huddle::sandbox_agent::process::SandboxAgentProcess::start(
        huddle::sandbox_agent::process::ProcessOptions {
            bin: Some(sandbox_agent_bin()),
            extra_path: vec![fixtures_bin()],
            env: vec![("PI_ACP_NO_IMAGES".into(), "1".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "hello").await;
    sse.until(is_turn_end).await;
    let (status, body) = app
        .post(
            "prompt",
            json!({"workspaceId": ws, "userId": "ada", "text": "look",
                "images": [{"mimeType": "image/png", "data": PNG}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not take images")
    );
    // Nothing is kept of a refused prompt: its images are gone with it.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM room_images WHERE workspace_id = $1")
        .bind(&ws)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    app.stop().await;
    sa.stop().await;
}

/// The room's timeline as its snapshot folds it.
async fn room_timeline(app: &TestApp, ws: &str) -> huddle::timeline::Timeline {
    let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
    let entries: Vec<huddle::model::RoomEntry> =
        serde_json::from_value(snapshot["entries"].clone()).unwrap();
    huddle::timeline::build(&entries)
}

/// Nothing in the room shows as a raw JSON row.
fn assert_no_raw_rows(timeline: &huddle::timeline::Timeline) {
    assert!(
        !timeline
            .items
            .iter()
            .any(|i| matches!(i.view, huddle::timeline::View::Raw { .. })),
        "{:#?}",
        timeline.items
    );
}

/// The update of a room entry that is an agent's session/update.
fn update(e: &huddle::model::RoomEntry) -> Option<&serde_json::Value> {
    match &e.event {
        RoomEvent::SessionEvent(ev) => ev.payload.pointer("/params/update"),
        _ => None,
    }
}

/// The real Claude Code, through its pinned ACP adapter and the real sandbox-agent, in the
/// workspace's own bubblewrap sandbox (as Huddle runs by default), against a scripted Anthropic
/// API: a streamed markdown reply, a Bash call that asks permission, an edit with a diff, then
/// Huddle and the sandbox restart and the agent still has the conversation (its transcripts are
/// in the sandbox's home).
#[tokio::test]
async fn the_real_claude_code_streams_asks_edits_and_remembers_across_a_restart() {
    let cost_of = |t: &huddle::timeline::Timeline| {
        t.session
            .usage
            .as_ref()
            .and_then(|u| u.cost.as_ref())
            .map_or(0.0, |c| c.0)
    };
    use crate::anthropic_api::{
        BASH_COMMAND, EARLIER_REQUESTS, FakeAnthropic, MARKDOWN_REPLY, PLAN,
    };
    let api = FakeAnthropic::start().await;
    let data = temp_data_dir();
    let env = [
        ("ANTHROPIC_BASE_URL", api.url.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ];
    let (pool, _) = fresh_db().await;
    let start = || spawn_sandboxed(&pool, &data, &env, None);
    let app = start().await;
    let ws = app.create("claude").await;
    let cwd = {
        let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
        std::path::PathBuf::from(info["workingDir"].as_str().unwrap())
    };
    let mut sse = app.events(&ws, "ada", None).await;

    // A markdown reply streams in pieces, and the room renders it.
    greets_in_pieces(&app, &ws, &mut sse, MARKDOWN_REPLY).await;
    let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
    let rendered = snapshot["rendered"].to_string();
    assert!(
        rendered.contains("<h2>Hello, team</h2>") && rendered.contains("<strong>bold</strong>"),
        "{rendered}"
    );
    // The model was told who speaks.
    let first = api.conversation_requests().last().unwrap().clone();
    assert!(first.to_string().contains("ada says"), "{first}");

    // The room's model picker reaches Claude Code: its next request names the model picked.
    let (status, body) = app
        .post(
            "option",
            json!({"workspaceId": ws, "userId": "ada", "configId": "model", "value": "haiku"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A pasted image reaches the model as an image block.
    let (status, body) = app
        .post(
            "prompt",
            json!({"workspaceId": ws, "userId": "ada", "text": "look at this",
                "images": [{"mimeType": "image/png", "data": PNG}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, "I see 1 image(s): image/png");
    let model = api.conversation_requests().last().unwrap()["model"].clone();
    assert!(model.as_str().unwrap().contains("haiku"), "{model}");

    // A Bash call asks first; once allowed, it runs in the workspace's directory.
    app.prompt(&ws, "ada", "make notes").await;
    let asked = answer(&app, &ws, &mut sse, "allow").await;
    assert_eq!(
        asked["toolCall"]["rawInput"]["command"], BASH_COMMAND,
        "{asked}"
    );
    assert_eq!(asked["toolCall"]["kind"], "execute", "{asked}");
    let kinds: Vec<&str> = asked["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"allow_once") && kinds.contains(&"reject_once"),
        "{kinds:?}"
    );
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, "The command printed: notes.md");
    let timeline = room_timeline(&app, &ws).await;
    let bash = tool_card(&timeline, |t| t.kind == "execute").expect("the Bash call's card");
    assert!(bash.title.contains("notes.md"), "{bash:?}");
    assert_eq!(bash.status.as_str(), "completed", "{bash:?}");
    let notes = cwd.join("notes.md");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "Teh plan\n");

    // An edit asks too, and shows its diff.
    app.prompt(&ws, "ada", &format!("fix the typo in {}", notes.display()))
        .await;
    let asked = answer(&app, &ws, &mut sse, "allow").await;
    assert_eq!(asked["toolCall"]["kind"], "edit", "{asked}");
    let turn = sse.until(is_turn_end).await;
    let diff = turn
        .iter()
        .filter_map(update)
        .chain(std::iter::once(&asked["toolCall"]))
        .filter_map(|u| u["content"].as_array())
        .flatten()
        .find(|c| c["type"] == "diff")
        .cloned()
        .expect("the edit's diff");
    assert_eq!(diff["path"], notes.to_str().unwrap(), "{diff}");
    assert!(
        diff["oldText"].as_str().unwrap().contains("Teh plan"),
        "{diff}"
    );
    assert!(
        diff["newText"].as_str().unwrap().contains("The plan"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "The plan\n");
    // The card shows the one line that changed, not the whole file, with its path relative to the
    // working directory.
    let timeline = room_timeline(&app, &ws).await;
    let edit =
        tool_card(&timeline, |t| t.kind == "edit" && !t.diffs.is_empty()).expect("the Edit's card");
    assert_eq!(edit.diffs[0].path, "notes.md", "{edit:?}");
    assert_eq!(edit.diffs[0].counts(), (1, 1), "{edit:?}");
    assert!(!edit.title.contains(cwd.to_str().unwrap()), "{edit:?}");
    let cost_before_stop = cost_of(&timeline);
    // Stop while Claude Code waits for an answer: the turn ends cancelled, the question is
    // withdrawn, and the command never ran.
    app.prompt(&ws, "ada", "clean up").await;
    sse.until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let (status, body) = app
        .post("cancel", json!({"workspaceId": ws, "userId": "ada"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let turn = sse.until(is_turn_end).await;
    assert!(
        matches!(&turn.last().unwrap().event,
            RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "cancelled"),
        "{turn:#?}"
    );
    let withdrawn = room_timeline(&app, &ws).await.items.iter().any(|i| {
        matches!(&i.view, huddle::timeline::View::Permission(p)
            if p.title.contains("rm notes.md") && p.cancelled)
    });
    assert!(withdrawn, "the question shows as no longer needed");
    assert!(notes.exists(), "the command did not run");

    // The room's mode picker reaches Claude Code, which asks, with its plan, to leave plan mode;
    // the answer sets the mode for the room.
    let (status, body) = app
        .post(
            "option",
            json!({"workspaceId": ws, "userId": "ada", "configId": "mode", "value": "plan"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.prompt(&ws, "ada", "plan the release").await;
    let asked = answer(&app, &ws, &mut sse, "default").await;
    assert_eq!(asked["toolCall"]["kind"], "switch_mode", "{asked}");
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, "Out of plan mode.");
    let timeline = room_timeline(&app, &ws).await;
    let card = timeline
        .items
        .iter()
        .find_map(|i| match &i.view {
            huddle::timeline::View::Permission(p) if p.tool_kind == "switch_mode" => Some(p),
            _ => None,
        })
        .expect("the plan's card");
    assert_eq!(card.text, [PLAN]);
    let mode = |t: &huddle::timeline::Timeline| {
        t.session
            .options
            .iter()
            .find(|o| o.id == "mode")
            .unwrap()
            .current
            .clone()
    };
    assert_eq!(mode(&timeline), "default");
    // The model the room chose stuck across the Stop: the reopened session was given it again,
    // and the picker says so.
    let model = api.conversation_requests().last().unwrap()["model"].clone();
    assert!(model.as_str().unwrap().contains("haiku"), "{model}");
    let model_picked = timeline
        .session
        .options
        .iter()
        .find(|o| o.id == "model")
        .unwrap()
        .current
        .clone();
    assert!(model_picked.contains("haiku"), "{model_picked}");
    // The cost is the session's, across its agent processes: it never goes down.
    assert!(cost_of(&timeline) >= cost_before_stop);
    // A second Stop, and a prompt after it: one agent process runs, however many Stops there were.
    app.prompt(&ws, "ada", "clean up").await;
    sse.until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let (status, body) = app
        .post("cancel", json!({"workspaceId": ws, "userId": "ada"}))
        .await;
    assert_eq!(status, 200, "{body}");
    sse.until(is_turn_end).await;
    app.prompt(&ws, "ada", "greet the team").await;
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, MARKDOWN_REPLY);
    assert_eq!(
        processes_settle_at("claude-agent-acp", 1).await,
        1,
        "one agent for the one session"
    );
    let timeline = room_timeline(&app, &ws).await;
    assert!(cost_of(&timeline) >= cost_before_stop);
    assert_eq!(
        mode(&timeline),
        "default",
        "the agent's own change of mode stuck"
    );
    let model = api.conversation_requests().last().unwrap()["model"].clone();
    assert!(model.as_str().unwrap().contains("haiku"), "{model}");
    // The session reopened after the Stop (Claude's adapter would otherwise end this turn at once
    // with the stopped one's late result) without telling the room: nothing was lost.
    let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
    let entries: Vec<huddle::model::RoomEntry> =
        serde_json::from_value(snapshot["entries"].clone()).unwrap();
    assert!(
        !entries
            .iter()
            .any(|e| matches!(e.event, RoomEvent::SessionRestored { .. }))
    );

    // Nothing Claude Code sent is a raw JSON row, and the room shows its controls.
    let timeline = room_timeline(&app, &ws).await;
    assert_no_raw_rows(&timeline);
    // The Read's card shows the file, without the reminder Claude Code adds for the model.
    let read = tool_card(&timeline, |t| t.kind == "read")
        .expect("the Read's card")
        .text
        .concat();
    assert!(
        read.contains("Teh plan") && !read.contains("system-reminder"),
        "{read}"
    );
    let options: Vec<&str> = timeline
        .session
        .options
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(options, ["mode", "model"]);
    assert!(
        timeline
            .session
            .commands
            .iter()
            .any(|c| c.name == "compact")
    );
    assert!(timeline.session.usage.as_ref().unwrap().cost.is_some());
    let head = turn.last().unwrap().seq;
    let before = api.conversation_requests().len();

    // Huddle and sandbox-agent restart: the room reopens Claude Code's own session, and the
    // model's next request carries the whole conversation.
    drop(sse);
    app.stop().await;
    let app = start().await;
    let mut sse = app.events(&ws, "ada", Some(head)).await;
    let got = recall(&app, &ws, &mut sse, &EARLIER_REQUESTS).await;
    assert!(
        !got.iter()
            .filter_map(update)
            .any(|u| u["sessionUpdate"] == "user_message_chunk"),
        "the agent's replay of the conversation is not shown again"
    );
    let requests = api.conversation_requests();
    assert_eq!(
        requests.len(),
        before + 1,
        "one model request for the prompt"
    );
    let sent = &requests.last().unwrap()["messages"];
    let sent_text = sent.to_string();
    for tool in ["\"Bash\"", "\"Read\"", "\"Edit\""] {
        assert!(
            sent_text.contains(tool),
            "the request carries the {tool} call"
        );
    }
    // Everything the last request before the restart carried is carried again, and more (Claude
    // Code merges consecutive messages of one role and tidies blocks, so blocks are compared by
    // what they are).
    let blocks = |request: &serde_json::Value| -> Vec<String> {
        request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| match b["type"].as_str()? {
                "text" => {
                    Some(b["text"].as_str()?.trim().to_string()).filter(|t| !t.starts_with('<'))
                }
                "tool_use" => Some(format!("call {} {}", b["id"], b["name"])),
                "tool_result" => Some(format!("result {}", b["tool_use_id"])),
                _ => None,
            })
            .collect()
    };
    let after = blocks(requests.last().unwrap());
    let last_before = blocks(&requests[before - 1]);
    for b in &last_before {
        assert!(
            after.contains(b),
            "{b} is carried after the restart: {after:#?}"
        );
    }
    assert!(after.len() > last_before.len());
    // kill -9 of the adapter while it waits for an answer: the turn ends with an error, the
    // question is withdrawn, and the next prompt starts the agent again with its memory.
    app.prompt(&ws, "ada", "make notes").await;
    sse.until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "claude-agent-acp"])
        .status()
        .unwrap();
    assert!(killed.success(), "the adapter was running");
    let turn = sse.until(is_turn_end).await;
    assert!(
        matches!(
            &turn.last().unwrap().event,
            RoomEvent::TurnEnded { error: Some(_), .. }
        ),
        "{turn:#?}"
    );
    assert!(turn.iter().any(|e| matches!(&e.event,
        RoomEvent::Notice { message, .. } if message.contains("process exited"))));
    assert!(
        turn.iter()
            .any(|e| matches!(e.event, RoomEvent::PermissionCancelled { .. }))
    );
    recall(&app, &ws, &mut sse, &EARLIER_REQUESTS).await;
    let timeline = room_timeline(&app, &ws).await;
    assert_no_raw_rows(&timeline);
    app.stop().await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", "claude-agent-acp"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "no Claude Code process is left with the sandbox"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// Waits (30 s at most) until `n` processes match `pattern` (`pgrep -f`): an agent told to end
/// takes a moment. Returns how many ran last.
async fn processes_settle_at(pattern: &str, n: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-c", "-f", pattern])
            .output()
            .unwrap();
        let running: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if running == n || std::time::Instant::now() > deadline {
            return running;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The real Codex, as the real Claude Code above: codex-acp 0.16.0 through the real sandbox-agent,
/// against a scripted OpenAI Responses API.
#[tokio::test]
async fn the_real_codex_streams_asks_shows_output_and_diffs_and_remembers_across_a_restart() {
    use crate::openai_api::{EARLIER_REQUESTS, FakeOpenAi, MARKDOWN_REPLY};
    let api = FakeOpenAi::start().await;
    // Not under /tmp (where a clone of this repository may be): Codex refuses to make its sandbox
    // helpers under a temporary directory, and its file edits go through them.
    let base = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache"))
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    let home = base.join(format!(
        "huddle-test-codex-{}",
        huddle::sandbox_agent::random_id()
    ));
    api.codex_home(&home);
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent_with_codex(&home, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("codex").await;
    let cwd = {
        let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
        std::path::PathBuf::from(info["workingDir"].as_str().unwrap())
    };
    let mut sse = app.events(&ws, "ada", None).await;

    // The agent's pickers and commands are there before the first prompt: the room opened the
    // session for its first person.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let facts = loop {
        let t = room_timeline(&app, &ws).await;
        if !t.session.options.is_empty() && !t.session.commands.is_empty() {
            break t.session;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no options before the first prompt"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<&str> = facts.options.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        ["mode", "model", "reasoning_effort"],
        "one mode picker"
    );
    assert!(
        facts.commands.iter().any(|c| c.name == "compact"),
        "{facts:?}"
    );
    assert!(api.requests().is_empty(), "no turn ran");

    // A markdown reply streams in pieces.
    greets_in_pieces(&app, &ws, &mut sse, MARKDOWN_REPLY).await;
    assert!(api.requests()[0].to_string().contains("ada says"));

    // The room picks a model; Codex's next request uses it.
    let (status, body) = app
        .post(
            "option",
            json!({"workspaceId": ws, "userId": "ada", "configId": "model", "value": "gpt-5.5"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A command outside Codex's sandbox asks first; once allowed it runs in the workspace, and
    // its card shows what it printed (Codex sends it only in `rawOutput`).
    app.prompt(&ws, "ada", "make notes").await;
    let asked = answer(&app, &ws, &mut sse, "approved").await;
    let title = asked["toolCall"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, "The command printed: notes.md", "{asked}");
    assert_eq!(api.requests().last().unwrap()["model"], "gpt-5.5");
    let notes = cwd.join("notes.md");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "Teh plan\n");
    let timeline = room_timeline(&app, &ws).await;
    let command = tool_card(&timeline, |t| t.kind == "execute").expect("the command's card");
    let output = command
        .terminal
        .as_ref()
        .map(|t| t.output.clone())
        .unwrap_or_default();
    assert!(output.contains("notes.md"), "{command:?}");
    // Paths show relative to the working directory, on the card and the question.
    let dir = cwd.to_str().unwrap();
    assert!(!command.title.contains(dir), "{command:?}");
    let question = timeline
        .items
        .iter()
        .find_map(|i| match &i.view {
            huddle::timeline::View::Permission(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        !question.title.contains(dir) && !question.text.concat().contains(dir),
        "{title} {question:?}"
    );

    // A patch asks too, and shows a line diff.
    app.prompt(&ws, "ada", "fix the typo").await;
    let asked = answer(&app, &ws, &mut sse, "approved").await;
    let turn = sse.until(is_turn_end).await;
    let reply: String = turn.iter().filter_map(said).collect();
    assert_eq!(reply, "Fixed the typo in `notes.md`.", "{asked}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "The plan\n");
    let timeline = room_timeline(&app, &ws).await;
    let diff = tool_card(&timeline, |t| !t.diffs.is_empty())
        .expect("the patch's card")
        .diffs[0]
        .clone();
    assert_eq!(diff.path, "notes.md", "{diff:?}");
    assert_eq!(diff.counts(), (1, 1), "{diff:?}");
    assert_no_raw_rows(&timeline);
    let head = turn.last().unwrap().seq;

    // Huddle and sandbox-agent restart: the room reopens Codex's own session, with the room's
    // model, and the model's next request carries the whole conversation.
    drop(sse);
    app.stop().await;
    let port = sa.port();
    sa.stop().await;
    // The sandbox host comes back where it was.
    let sa = start_sandbox_agent_with_codex(&home, Some(port)).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let mut sse = app.events(&ws, "ada", Some(head)).await;
    recall(&app, &ws, &mut sse, &EARLIER_REQUESTS).await;
    assert_eq!(
        api.requests().last().unwrap()["model"],
        "gpt-5.5",
        "the model stuck"
    );
    assert_no_raw_rows(&room_timeline(&app, &ws).await);
    app.stop().await;
    sa.stop().await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", "codex-acp"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "no Codex process is left");
    let _ = std::fs::remove_dir_all(&home);
}

/// Asks the agent what the room did so far: its session is restored with its whole memory (the
/// room says so), and it names every earlier request. Returns the turn.
async fn recall(
    app: &TestApp,
    ws: &str,
    sse: &mut Sse,
    earlier: &[&str],
) -> Vec<huddle::model::RoomEntry> {
    app.prompt(ws, "ada", "what did we do so far?").await;
    let got = sse.until(is_turn_end).await;
    assert!(
        got.iter().any(|e| matches!(
            e.event,
            RoomEvent::SessionRestored {
                full_memory: true,
                ..
            }
        )),
        "{got:#?}"
    );
    let reply: String = got.iter().filter_map(said).collect();
    assert_eq!(reply, format!("I remember: {}", earlier.join(", ")));
    got
}

/// Asks the agent to greet the team: its markdown reply streams in more than three pieces, and
/// is the scripted one.
async fn greets_in_pieces(app: &TestApp, ws: &str, sse: &mut Sse, reply: &str) {
    app.prompt(ws, "ada", "greet the team").await;
    let turn = sse.until(is_turn_end).await;
    let chunks: Vec<String> = turn
        .iter()
        .filter_map(said)
        .filter(|t| !t.is_empty())
        .collect();
    assert!(chunks.len() > 3, "streamed in pieces: {chunks:?}");
    assert_eq!(chunks.concat(), reply);
}

/// The first tool card of the timeline that `pick` chooses.
fn tool_card(
    timeline: &huddle::timeline::Timeline,
    pick: impl Fn(&huddle::timeline::ToolView) -> bool,
) -> Option<huddle::timeline::ToolView> {
    timeline.items.iter().find_map(|i| match &i.view {
        huddle::timeline::View::Tool(t) if pick(t) => Some(t.clone()),
        _ => None,
    })
}
