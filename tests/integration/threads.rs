//! Threads: several conversations per workspace, each with its own agent session, log, queue and
//! status, running at the same time; the live thread list with unread counts per person; forks;
//! exports; viewers; and a workspace made before threads keeps its conversation as its first.

use std::time::Duration;

use crate::common::*;
use huddle::model::{RoomEvent, ThreadStatus};
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

/// The room stream of one thread, as a test user.
async fn thread_events(app: &TestApp, ws: &str, thread: &str, user: &str) -> Sse {
    let token = app.token(ws, user).await;
    let res = app
        .http
        .get(format!(
            "{}/api/workspace/{ws}/events?threadId={thread}",
            app.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    Sse::from_response(res)
}

async fn prompt_in(app: &TestApp, ws: &str, thread: &str, user: &str, text: &str) -> i64 {
    let (s, body) = app
        .post(
            "prompt",
            json!({"workspaceId": ws, "threadId": thread, "userId": user, "displayName": user, "text": text}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    body["seq"].as_i64().unwrap()
}

async fn list(app: &TestApp, ws: &str, user: &str) -> Vec<serde_json::Value> {
    let (s, body) = app
        .post("threads", json!({"workspaceId": ws, "userId": user}))
        .await;
    assert_eq!(s, 200, "{body}");
    body["threads"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [serde_json::Value], thread: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|t| t["threadId"] == thread)
        .unwrap_or_else(|| panic!("thread {thread} in {list:?}"))
}

/// Polls the thread list until `pred` holds for the thread (30 s at most).
async fn until_listed(
    app: &TestApp,
    ws: &str,
    user: &str,
    thread: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..300 {
        let l = list(app, ws, user).await;
        let t = find(&l, thread).clone();
        if pred(&t) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "thread {thread} never matched: {:?}",
        list(app, ws, user).await
    );
}

async fn create_thread(app: &TestApp, ws: &str, user: &str, body: serde_json::Value) -> String {
    let mut body = body;
    body["workspaceId"] = json!(ws);
    body["userId"] = json!(user);
    let (s, made) = app.post("threads/create", body).await;
    assert_eq!(s, 200, "{made}");
    let id = made["threadId"].as_str().unwrap().to_string();
    assert_eq!(made["url"], format!("/w/{ws}/t/{id}"));
    id
}

/// Bob forks `from` at row `seq`; the new thread's stream, read past its first entry, which says
/// where it came from and how.
async fn fork_thread(
    app: &TestApp,
    ws: &str,
    from: &str,
    seq: i64,
    expected: huddle::model::ForkMethod,
) -> (String, Sse) {
    let fork = create_thread(
        app,
        ws,
        "bob",
        json!({"forkFrom": {"threadId": from, "seq": seq}}),
    )
    .await;
    let mut events = thread_events(app, ws, &fork, "bob").await;
    match events.next().await.event {
        RoomEvent::ThreadForked {
            from_thread_id,
            seq: at,
            method,
            ..
        } => {
            assert_eq!(from_thread_id, from);
            assert_eq!(at, seq);
            assert_eq!(method, expected);
        }
        other => panic!("a fork opens with where it came from: {other:?}"),
    }
    (fork, events)
}

#[tokio::test]
async fn threads_run_at_once_with_live_statuses_permissions_and_unread_counts() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let first = first_thread(&pool, &ws).await;
    // The workspace's one conversation is its first thread; a second has an agent of its own.
    let b = create_thread(
        &app,
        &ws,
        "ada",
        json!({"agent": "pi", "title": "Second task"}),
    )
    .await;
    let l = list(&app, &ws, "ada").await;
    assert_eq!(l.len(), 2);
    assert_eq!(find(&l, &b)["title"], "Second task");
    assert_eq!(find(&l, &b)["agent"], "pi");
    assert_eq!(find(&l, &first)["status"], "idle");

    let mut a_events = thread_events(&app, &ws, &first, "ada").await;
    let mut b_events = thread_events(&app, &ws, &b, "bob").await;
    // A long turn in A; meanwhile B's turn runs and ends: turns of different threads do not wait
    // for each other.
    // It streams until it is stopped, however slow the machine.
    prompt_in(&app, &ws, &first, "ada", "pace 100000 20").await;
    let working = until_listed(&app, &ws, "bob", &first, |t| t["status"] == "working").await;
    assert_eq!(working["startedBy"], "ada");
    prompt_in(&app, &ws, &b, "bob", "stream 5").await;
    let b_turn = b_events.until(is_turn_end).await;
    assert!(
        b_turn
            .iter()
            .any(|e| agent_said(e).as_deref() == Some("chunk 4 "))
    );
    let l = list(&app, &ws, "bob").await;
    assert_eq!(
        find(&l, &first)["status"],
        "working",
        "A still works after B ended"
    );
    assert_eq!(find(&l, &b)["status"], "idle");

    // A permission request in B shows on B for Ada, who watches A, at once (a pulse on A's
    // stream), and she answers it from B.
    prompt_in(&app, &ws, &b, "bob", "permission").await;
    let asked = b_events
        .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let request_id = match &asked.last().unwrap().event {
        RoomEvent::PermissionRequested { request_id, .. } => request_id.clone(),
        _ => unreachable!(),
    };
    until_listed(&app, &ws, "ada", &b, |t| t["status"] == "needs_answer").await;
    // Ada's stream of A carried B's status.
    let (s, _) = app
        .post(
            "cancel",
            json!({"workspaceId": ws, "threadId": first, "userId": "ada"}),
        )
        .await;
    assert_eq!(s, 200);
    a_events.until(is_turn_end).await;
    assert!(
        a_events
            .pulses
            .iter()
            .any(|p| p.thread_id == b && p.status == Some(ThreadStatus::NeedsAnswer)),
        "A's stream says B needs an answer: {:?}",
        a_events.pulses
    );
    assert!(
        a_events
            .pulses
            .iter()
            .any(|p| p.thread_id == first && p.status == Some(ThreadStatus::Working)),
    );
    let (s, body) = app
        .post(
            "permission",
            json!({"workspaceId": ws, "threadId": b, "userId": "ada", "requestId": request_id, "optionId": "allow"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let answered = b_events.until(is_turn_end).await;
    assert!(
        answered
            .iter()
            .any(|e| agent_said(e).as_deref() == Some("permission: allow"))
    );
    until_listed(&app, &ws, "ada", &b, |t| t["status"] == "idle").await;

    // Unread counts are per person and kept in Postgres: Bob read B to its head, Ada did not.
    let head = find(&list(&app, &ws, "bob").await, &b)["head"]
        .as_i64()
        .unwrap();
    let (s, _) = app
        .post(
            "threads/read",
            json!({"workspaceId": ws, "threadId": b, "userId": "bob", "seq": head}),
        )
        .await;
    assert_eq!(s, 200);
    let bob_b = find(&list(&app, &ws, "bob").await, &b)["unread"]
        .as_i64()
        .unwrap();
    let ada_b = find(&list(&app, &ws, "ada").await, &b)["unread"]
        .as_i64()
        .unwrap();
    assert_eq!(bob_b, 0);
    // Two prompts, two turn ends and a question.
    assert!(ada_b >= 5, "ada has B's messages unread: {ada_b}");
    // A new message in B is unread for Bob again; a read mark never goes back.
    prompt_in(&app, &ws, &b, "ada", "hello").await;
    b_events.until(is_turn_end).await;
    let (s, _) = app
        .post(
            "threads/read",
            json!({"workspaceId": ws, "threadId": b, "userId": "bob", "seq": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let bob_b = find(&list(&app, &ws, "bob").await, &b)["unread"]
        .as_i64()
        .unwrap();
    assert_eq!(bob_b, 2, "Ada's prompt and the turn's end");
    // The list is sorted by activity: B was active last.
    assert_eq!(list(&app, &ws, "bob").await[0]["threadId"], b);

    // Rename and archive, by members; the list follows.
    let (s, _) = app
        .post(
            "threads/rename",
            json!({"workspaceId": ws, "threadId": first, "userId": "bob", "title": "First task"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post(
            "threads/archive",
            json!({"workspaceId": ws, "threadId": b, "userId": "bob", "archived": true}),
        )
        .await;
    assert_eq!(s, 200);
    let l = list(&app, &ws, "ada").await;
    assert_eq!(find(&l, &first)["title"], "First task");
    assert_eq!(find(&l, &b)["archived"], true);

    // A thread of another workspace, and bad ids, are refused with a clear error.
    let other = app.create("pi").await;
    let (s, body) = app
        .post("info", json!({"workspaceId": other, "threadId": b}))
        .await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["code"], "not_found");
    let (s, _) = app
        .post(
            "info",
            json!({"workspaceId": ws, "threadId": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, body) = app
        .post(
            "threads/create",
            json!({"workspaceId": ws, "agent": "nope"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");

    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn a_fork_carries_the_conversation_and_exports_hold_the_whole_thread() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let first = first_thread(&pool, &ws).await;
    let mut events = thread_events(&app, &ws, &first, "ada").await;
    prompt_in(&app, &ws, &first, "ada", "remember pelican").await;
    events.until(is_turn_end).await;
    prompt_in(&app, &ws, &first, "bob", "tools").await;
    events.until(is_turn_end).await;
    prompt_in(&app, &ws, &first, "ada", "permission").await;
    let asked = events
        .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let request_id = match &asked.last().unwrap().event {
        RoomEvent::PermissionRequested { request_id, .. } => request_id.clone(),
        _ => unreachable!(),
    };
    let (s, _) = app
        .post(
            "permission",
            json!({"workspaceId": ws, "threadId": first, "userId": "bob", "requestId": request_id, "optionId": "allow"}),
        )
        .await;
    assert_eq!(s, 200);
    let last = events.until(is_turn_end).await.last().unwrap().seq;
    // Something after the fork point that the fork must not carry.
    prompt_in(&app, &ws, &first, "ada", "remember walrus").await;
    events.until(is_turn_end).await;

    // Fork from the end of the permission turn: someone spoke since, so the transcript goes.
    let (fork, mut forked) = fork_thread(
        &app,
        &ws,
        &first,
        last,
        huddle::model::ForkMethod::Transcript,
    )
    .await;
    let l = list(&app, &ws, "bob").await;
    assert_eq!(find(&l, &fork)["forkedFrom"]["threadId"], first.as_str());
    prompt_in(&app, &ws, &fork, "bob", "hello").await;
    forked.until(is_turn_end).await;
    prompt_in(&app, &ws, &fork, "bob", "recall").await;
    let recalled: String = forked
        .until(is_turn_end)
        .await
        .iter()
        .filter_map(agent_said)
        .collect();
    assert!(recalled.contains("remember pelican"), "{recalled}");
    assert!(recalled.contains("permission"), "{recalled}");
    assert!(
        !recalled.contains("walrus"),
        "only the conversation up to the fork: {recalled}"
    );
    // The thread it came from goes on by itself.
    prompt_in(&app, &ws, &first, "ada", "recall").await;
    let original: String = events
        .until(is_turn_end)
        .await
        .iter()
        .filter_map(agent_said)
        .collect();
    assert!(!original.contains("hello"), "{original}");

    // Forked at the end of the conversation, with the same agent, which offers session/fork:
    // the agent forks its own session, and no transcript goes with the first prompt.
    let end = huddle::store::room_log::head(&pool, &first).await.unwrap();
    let (whole, mut whole_events) =
        fork_thread(&app, &ws, &first, end, huddle::model::ForkMethod::Session).await;
    prompt_in(&app, &ws, &whole, "bob", "recall").await;
    let recalled: String = whole_events
        .until(is_turn_end)
        .await
        .iter()
        .filter_map(agent_said)
        .collect();
    assert!(
        recalled.contains("remember pelican") && recalled.contains("remember walrus"),
        "{recalled}"
    );
    assert!(
        !recalled.contains("This thread continues"),
        "no transcript: {recalled}"
    );

    // Exports: Markdown and JSONL of the first thread hold every message, tool call, diff and
    // answer, in order.
    let viewer = {
        let (s, body) = app
            .post_as(
                ADMIN_TOKEN,
                "tokens/create",
                json!({"workspaceId": ws, "name": "Vera", "role": "viewer"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    };
    let get = |file: &str, token: &str| {
        app.http
            .get(format!(
                "{}/api/workspace/{ws}/threads/{first}/{file}",
                app.base
            ))
            .bearer_auth(token.to_string())
            .send()
    };
    let res = get("export.md", &viewer).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    let md = res.text().await.unwrap();
    let order = [
        "remember pelican",
        "You said: remember pelican",
        "Edit src/main.rs",
        "-let x = 1;",
        "+let x = 2;",
        "I fixed **the bug**.",
        "The agent asks: Run rm -rf build/",
        "**bob** answered **Allow once**.",
        "permission: allow",
        "remember walrus",
    ];
    let mut at = 0;
    for needle in order {
        let found = md[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} after byte {at} of the export:\n{md}"));
        at += found + needle.len();
    }
    let res = get("export.jsonl", ADMIN_TOKEN).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let head = huddle::store::room_log::head(&pool, &first).await.unwrap();
    assert_eq!(lines.len() as i64, head, "one line per log entry");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as i64 + 1);
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
        assert!(l["kind"].is_string() && l["author"].is_string() && !l["data"].is_null());
    }
    assert!(
        lines.iter().any(|l| l["kind"] == "permission.answered"
            && l["author"].as_str().unwrap().starts_with("bob"))
    );
    let (s, _) = (
        get("export.exe", ADMIN_TOKEN)
            .await
            .unwrap()
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(s, 404);

    // A viewer sees the list and every thread live, and can act in none.
    let (s, body) = app
        .post_as(&viewer, "threads", json!({"workspaceId": ws}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["threads"].as_array().unwrap().len(), 3);
    let res = app
        .http
        .get(format!(
            "{}/api/workspace/{ws}/events?threadId={fork}",
            app.base
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut watching = Sse::from_response(res);
    assert!(matches!(
        watching.next().await.event,
        RoomEvent::ThreadForked { .. }
    ));
    for (endpoint, body) in [
        (
            "prompt",
            json!({"workspaceId": ws, "threadId": fork, "text": "hi"}),
        ),
        ("threads/create", json!({"workspaceId": ws})),
        (
            "threads/rename",
            json!({"workspaceId": ws, "threadId": fork, "title": "x"}),
        ),
        (
            "threads/archive",
            json!({"workspaceId": ws, "threadId": fork, "archived": true}),
        ),
        ("cancel", json!({"workspaceId": ws, "threadId": fork})),
    ] {
        let (s, answer) = app.post_as(&viewer, endpoint, body).await;
        assert_eq!(s, 403, "{endpoint}: {answer}");
    }

    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn a_workspace_made_before_threads_opens_with_its_conversation_as_its_first_thread() {
    let admin_url = std::env::var("HUDDLE_TEST_DATABASE_URL").unwrap();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let name = format!("t_old_{}", std::process::id());
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&admin)
        .await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // The schema as it was before threads, with a workspace that had a conversation.
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 20261206000010)
            .cloned()
            .collect(),
    );
    before.run(&pool).await.unwrap();
    let ws = "0123456789abcdef0123456789abcdef";
    sqlx::query(
        "INSERT INTO workspaces (id, agent, sandbox_id, sandbox_base_url, name) \
         VALUES ($1, 'pi', 'sbx_0123456789ab', 'local', 'Old one')",
    )
    .bind(ws)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO sandboxes (id, workspace_id, provider) VALUES ('sbx_0123456789ab', $1, 'none')")
        .bind(ws)
        .execute(&pool)
        .await
        .unwrap();
    for (seq, text) in [(1, "first words"), (2, "second words")] {
        sqlx::query(
            "INSERT INTO room_log (workspace_id, seq, kind, data, created_at) VALUES ($1, $2, 'chat.user', $3, 1)",
        )
        .bind(ws)
        .bind(seq as i64)
        .bind(json!({"userId": "u", "displayName": "Old Ada", "text": text, "createdAt": 1}))
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO room_state (workspace_id, state) VALUES ($1, $2)")
        .bind(ws)
        .bind(
            json!({"running": null, "connection": null, "promptRpcId": null, "queue": [],
            "openPermissions": [], "lastPromptSeq": 2, "teamNotes": ["Old Bob: a note"]}),
        )
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Huddle migrates it: the conversation, its state and its agent session are its first thread.
    let pool = huddle::store::connect(&url).await.unwrap();
    let thread = huddle::store::threads::first(&pool, ws)
        .await
        .unwrap()
        .expect("a first thread");
    assert_eq!(thread.session_id, format!("{ws}/default"));
    assert_eq!(thread.agent, "pi");
    let entries = huddle::store::room_log::list(&pool, &thread.id, 0, i64::MAX, i64::MAX)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        matches!(&entries[1].event, RoomEvent::ChatUser { text, .. } if text == "second words")
    );
    let state = huddle::store::room_state::load(&pool, &thread.id)
        .await
        .unwrap();
    assert_eq!(state.team_notes, vec!["Old Bob: a note".to_string()]);
    // And the API serves it as the workspace's conversation, with or without its thread id.
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let (s, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["threadId"], thread.id.as_str());
    assert_eq!(info["head"], 2);
    let (s, snap) = app
        .post(
            "snapshot",
            json!({"workspaceId": ws, "threadId": thread.id}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(snap["entries"].as_array().unwrap().len(), 2);
    app.stop().await;
    sa.stop().await;
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
}
