//! Workspace actors, the room log and its SSE stream, through the HTTP API of an in-process Huddle,
//! against a real Postgres and the real sandbox-agent.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use huddle::model::{RoomEntry, RoomEvent};
use serde_json::json;

const LONG: Duration = Duration::from_secs(300);

use crate::common::agent_said as chunk;

#[tokio::test]
async fn two_subscribers_see_identical_streams_and_reconnects_replay_exactly_the_log() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut ada = app.events(&ws, "ada", None).await;
    let mut bob = app.events(&ws, "bob", None).await;
    app.prompt(&ws, "ada", "stream 20").await;
    app.prompt(&ws, "bob", "tools").await;
    let a: Vec<RoomEntry> = {
        let mut got = ada.until(is_turn_end).await;
        got.extend(ada.until(is_turn_end).await);
        got
    };
    let head = a.last().unwrap().seq;
    let b = bob.upto(head).await;
    // Ada's stream starts at 1; Bob's subscription came later, so his starts with what he missed
    // replayed from Postgres: both are the same gap-free log.
    assert_eq!(
        a.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    assert_eq!(a, b, "identical streams");

    // The token of sandbox-agent reaches no client.
    let token = sa.endpoint().token.clone().unwrap();
    assert!(!serde_json::to_string(&a).unwrap().contains(&token));
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert!(!info.to_string().contains(&token));

    // Ada stays connected (so no new presence entries); every Last-Event-ID replays exactly the rest.
    for k in 0..=head {
        let mut again = app.events(&ws, "ada", Some(k)).await;
        if k == head {
            continue;
        }
        let got = again.upto(head).await;
        assert_eq!(got, a[k as usize..].to_vec(), "replay after {k}");
    }
    // `?after=` does the same for clients that cannot set headers.
    let res = app
        .http
        .get(format!("{}/api/workspace/{ws}/events?after=x", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn five_users_prompting_at_once_keep_one_order_and_queued_prompts_run_in_it() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "watcher", None).await;
    let prompts = (0..5).map(|i| {
        let app = &app;
        let ws = ws.clone();
        async move {
            app.prompt(&ws, &format!("user{i}"), &format!("stream 3 from user{i}"))
                .await
        }
    });
    let seqs: Vec<i64> = futures::future::join_all(prompts).await;
    assert_eq!(
        seqs.iter().collect::<HashSet<_>>().len(),
        5,
        "distinct seqs"
    );
    let mut entries = Vec::new();
    for _ in 0..5 {
        entries.extend(sse.until(is_turn_end).await);
    }
    let mut sorted = seqs.clone();
    sorted.sort();
    let started: Vec<i64> = entries
        .iter()
        .filter_map(|e| match &e.event {
            RoomEvent::TurnStarted { prompt_seq, .. } => Some(*prompt_seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        started, sorted,
        "turns run in the order the prompts were taken"
    );
    let queued = entries
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::PromptQueued { .. }))
        .count();
    assert_eq!(queued, 4, "all but the first waited in the queue");
    // Each turn's output sits between its start and its end.
    let mut current = None;
    for e in &entries {
        match &e.event {
            RoomEvent::TurnStarted { prompt_seq, .. } => current = Some(*prompt_seq),
            RoomEvent::TurnEnded {
                prompt_seq,
                stop_reason,
                ..
            } => {
                assert_eq!(Some(*prompt_seq), current);
                assert_eq!(stop_reason.as_deref(), Some("end_turn"));
                current = None;
            }
            _ if chunk(e).is_some() => assert!(current.is_some(), "output outside a turn: {e:?}"),
            _ => {}
        }
    }
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(info["queue"], json!([]));
    assert_eq!(info["status"], "idle");
    app.stop().await;
    sa.stop().await;
}

/// A Stop pressed while the next prompt is on its way (it waits for the room's state naming its
/// connection to be kept, and Postgres holds that write): the prompt never reaches the agent, the
/// turn ends cancelled, and the room goes on. Before, both left together once the write was done,
/// and the agent could take the Stop first (with no turn to stop) and then run the whole prompt.
#[tokio::test]
async fn a_stop_while_the_prompt_is_on_its_way_keeps_it_from_the_agent() {
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "slow").await;
    sse.until(|e| chunk(e).is_some_and(|t| t.starts_with("working 1")))
        .await;
    let next = app.prompt(&ws, "ada", "pace 10 40").await;
    app.prompt(&ws, "ada", "hello").await;
    // The queue is kept (its state written after the prompts are answered).
    let thread = first_thread(&pool, &ws).await;
    let kept_queue = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT jsonb_array_length(state -> 'queue') FROM room_state WHERE thread_id = $1",
        )
        .bind(&thread)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    while kept_queue().await != 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Writes of the room's state wait from here; the room log's do not.
    let mut lock = pool.begin().await.unwrap();
    for sql in [
        "SET LOCAL idle_in_transaction_session_timeout = 0",
        "LOCK TABLE room_state IN EXCLUSIVE MODE",
    ] {
        sqlx::query(sql).execute(&mut *lock).await.unwrap();
    }
    let queue = |info: serde_json::Value| info["queue"].as_array().unwrap().len();

    // The first turn stops; the next starts, and its prompt waits for its state to be kept.
    let (status, _) = app
        .post("cancel", json!({"workspaceId": ws, "userId": "ada"}))
        .await;
    assert_eq!(status, 200);
    while queue(app.post("info", json!({"workspaceId": ws})).await.1) != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop it, and the prompt behind it. Answered once recorded, so behind the held write: the
    // queue the room knows (not written yet) shows the Stop reached it.
    let stop = {
        let (http, base) = (app.http.clone(), app.base.clone());
        let body =
            json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob", "clearQueue": true});
        tokio::spawn(async move {
            http.post(format!("{base}/api/workspace/cancel"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    while queue(app.post("info", json!({"workspaceId": ws})).await.1) != 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.commit().await.unwrap();
    assert_eq!(stop.await.unwrap(), 200);
    let rest = sse
        .until(|e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == next))
        .await;
    let after_start = rest.iter().skip_while(
        |e| !matches!(e.event, RoomEvent::TurnStarted { prompt_seq, .. } if prompt_seq == next),
    );
    let said: Vec<_> = after_start.filter_map(chunk).collect();
    assert!(said.is_empty(), "the stopped prompt was answered: {said:?}");
    assert!(
        matches!(&rest.last().unwrap().event, RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "cancelled")
    );
    let prompts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandbox_agent.events WHERE sender = 'client' AND payload_json ->> 'method' = 'session/prompt'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(prompts, 1, "only the first prompt went to the agent");
    // The room goes on.
    let last = app.prompt(&ws, "ada", "pace 3 40").await;
    let rest = sse
        .until(|e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == last))
        .await;
    assert!(
        matches!(&rest.last().unwrap().event, RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "end_turn"),
        "{:?}",
        rest.last()
    );
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_turn_and_the_first_permission_answer_wins() {
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;

    let (status, body) = app
        .post("cancel", json!({"workspaceId": ws, "userId": "ada"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "nothing to cancel"
    );

    app.prompt(&ws, "ada", "slow").await;
    sse.until(|e| chunk(e).is_some_and(|t| t.starts_with("working 2")))
        .await;
    let (status, _) = app
        .post(
            "cancel",
            json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob"}),
        )
        .await;
    assert_eq!(status, 200);
    let rest = sse.until(is_turn_end).await;
    assert!(rest.iter().any(|e| matches!(&e.event, RoomEvent::TurnCancelling { display_name, .. } if display_name == "Bob")));
    assert!(
        matches!(&rest.last().unwrap().event, RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "cancelled")
    );

    // The session lives on: the next prompt runs in it.
    app.prompt(&ws, "ada", "permission").await;
    let got = sse
        .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let request_id = match &got.last().unwrap().event {
        RoomEvent::PermissionRequested { request_id, .. } => request_id.clone(),
        _ => unreachable!(),
    };
    let answer = |user: &'static str, option: &'static str| {
        let app = &app;
        let body = json!({"workspaceId": ws, "userId": user, "displayName": user, "requestId": request_id, "optionId": option});
        async move { app.post("permission", body).await }
    };
    let (first, second) = tokio::join!(answer("ada", "allow"), answer("bob", "reject"));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
    let loser = if first.0 == 409 { &first.1 } else { &second.1 };
    assert!(
        loser["message"]
            .as_str()
            .unwrap()
            .starts_with("Already answered by"),
        "{loser}"
    );
    let rest = sse.until(is_turn_end).await;
    let answered: Vec<_> = rest
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::PermissionAnswered { .. }))
        .collect();
    assert_eq!(answered.len(), 1);
    let winner_option = match &answered[0].event {
        RoomEvent::PermissionAnswered { option_id, .. } => option_id.clone(),
        _ => unreachable!(),
    };
    assert!(
        rest.iter()
            .filter_map(chunk)
            .any(|t| t == format!("permission: {winner_option}"))
    );
    let (status, _) = app
        .post(
            "permission",
            json!({"workspaceId": ws, "userId": "c", "requestId": "nope", "optionId": "allow"}),
        )
        .await;
    assert_eq!(status, 404);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("mock").await;
    let base = json!({"workspaceId": ws, "userId": "u", "displayName": "U"});
    let with_text = |t: String| {
        let mut b = base.clone();
        b["text"] = json!(t);
        b
    };
    let (s, b) = app.post("prompt", with_text("   ".into())).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));
    let (s, b) = app.post("prompt", with_text("x".repeat(16_001))).await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().contains("limit"));
    let (s, _) = app.post("prompt", json!({"workspaceId": ws})).await;
    assert_eq!(s, 400, "missing fields");
    let (s, b) = app.post("create", json!({"agent": "no-such-agent"})).await;
    assert_eq!(s, 400);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("no agent `no-such-agent`"),
        "{b}"
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    let (s, b) = app.post("info", json!({"workspaceId": unknown})).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    let res = app
        .http
        .get(format!("{}/api/workspace/{unknown}/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    // Nothing was lost: the log holds no trace of the refused messages, and a good one goes through.
    let seq = app.prompt(&ws, "u", "hello").await;
    assert_eq!(seq, 1);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn actors_sleep_and_wake_and_a_crash_stays_in_its_actor() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, Duration::from_millis(300)).await;
    let ws = app.create("pi").await;
    let other = app.create("mock").await;
    let head = {
        let mut sse = app.events(&ws, "ada", None).await;
        app.prompt(&ws, "ada", "remember pelican").await;
        sse.until(is_turn_end).await.last().unwrap().seq
    };
    app.post("info", json!({"workspaceId": other})).await;
    // Nobody connected, nothing running: both fall asleep.
    let registry = app.state.registry().clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while registry.awake() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the actors sleep");

    // The next call wakes the actor, which reopens the agent's own session (`session/load`): the
    // agent remembers, and its replay of the conversation is not shown a second time.
    let mut sse = app.events(&ws, "ada", Some(head)).await;
    app.prompt(&ws, "ada", "recall").await;
    let got = sse.until(is_turn_end).await;
    assert!(got.iter().any(|e| matches!(
        e.event,
        RoomEvent::SessionRestored {
            full_memory: true,
            ..
        }
    )));
    let said: Vec<String> = got.iter().filter_map(chunk).collect();
    assert_eq!(
        said,
        vec![r#"I remember: ["remember pelican"]"#.to_string()],
        "{said:?}"
    );
    assert!(
        !got.iter()
            .any(|e| matches!(&e.event, RoomEvent::SessionEvent(ev)
            if ev.payload["params"]["update"]["sessionUpdate"] == "user_message_chunk")),
        "the agent's replay of the conversation is not shown again"
    );

    // A panic in one actor leaves the others running, and the next call starts it again.
    let other_key = huddle::room::RoomKey {
        thread: huddle::store::threads::first(&pool, &other)
            .await
            .unwrap()
            .unwrap()
            .id,
        workspace: other.clone(),
    };
    registry.crash_for_tests(&other_key).await.unwrap();
    let (s, _) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, info) = app.post("info", json!({"workspaceId": other})).await;
    assert_eq!(s, 200, "{info}");
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn restarting_the_app_keeps_the_history_and_the_session() {
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "the password is swordfish").await;
    let before = sse.until(is_turn_end).await;
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    drop(sse);
    app.stop().await;

    let app = spawn_app(&pool, &sa, LONG).await;
    let mut sse = app.events(&ws, "ada", None).await;
    let replayed = sse.upto(before.last().unwrap().seq).await;
    assert_eq!(replayed, before, "the history survives the restart");
    app.prompt(&ws, "ada", "recall").await;
    let after = sse.until(is_turn_end).await;
    assert!(
        after
            .iter()
            .rev()
            .find_map(chunk)
            .unwrap()
            .contains("swordfish"),
        "the agent remembers across the restart"
    );
    let (_, info2) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(info["sessionId"], info2["sessionId"]);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn history_pages_follow_the_log_as_it_grows() {
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    // What a fresh fold of the whole log pages out, by row key, against what the server (which
    // keeps a room's fold and applies only what was logged since) pages out.
    let compare = || async {
        let snapshot = app.post("snapshot", json!({"workspaceId": ws})).await.1;
        let entries: Vec<RoomEntry> = serde_json::from_value(snapshot["entries"].clone()).unwrap();
        let fresh = huddle::timeline::fold(&entries);
        let rows = fresh.items().len();
        let (start, items) = fresh.page(rows, 100, usize::MAX);
        let (status, page) = app
            .post("history", json!({"workspaceId": ws, "before": rows}))
            .await;
        assert_eq!(status, 200, "{page}");
        let page: huddle::timeline::HistoryPage = serde_json::from_value(page).unwrap();
        let keys = |items: &[huddle::timeline::Item]| {
            items.iter().map(|i| i.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(page.start, start);
        assert_eq!(keys(&page.items), keys(&items));
        rows
    };
    for text in ["stream 3", "tools"] {
        app.prompt(&ws, "ada", text).await;
        sse.until(is_turn_end).await;
    }
    let before = compare().await;
    for text in ["stream 5", "markdown", "tools"] {
        app.prompt(&ws, "ada", text).await;
        sse.until(is_turn_end).await;
    }
    let after = compare().await;
    assert!(after > before, "{before} rows, then {after}");
    app.stop().await;
    sa.stop().await;
}
