//! The Sandbox Agent client against the real sandbox-agent binary and a real Postgres.

use std::time::Duration;

use crate::common::*;
use huddle::sandbox_agent::process::{ProcessOptions, SandboxAgentProcess};
use huddle::sandbox_agent::{
    CreateSessionRequest, SessionEvent, SessionNotice, SessionPersistDriver,
};

fn request(id: &str, agent: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        id: id.into(),
        agent: agent.into(),
        cwd: Some("/tmp".into()),
        sandbox_id: None,
        options: Default::default(),
        fork_of: None,
    }
}

async fn all_events(persist: &dyn SessionPersistDriver, session: &str) -> Vec<SessionEvent> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = persist
            .list_events(session, cursor.as_deref(), 7)
            .await
            .unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn assert_gap_free(events: &[SessionEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.event_index,
            i as i64 + 1,
            "event indexes are 1, 2, 3, ..."
        );
    }
}

#[tokio::test]
async fn mock_agent_end_to_end() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let client = client(&sa, &pool);
    client.health().await.unwrap();
    let agents = client.list_agents().await.unwrap();
    assert!(
        agents.iter().any(|a| a.id == "mock" && a.installed),
        "{agents:?}"
    );

    let (tx, mut rx) = notices();
    let session = client
        .resume_or_create_session(request("mock-1", "mock"), tx)
        .await
        .unwrap();
    // The mock answers session/new without a sessionId, and still works.
    assert_eq!(session.record().await.agent_session_id, None);
    let end = session.prompt("hello mock").await.unwrap();
    assert_eq!(end.stop_reason, "end_turn");

    let events = all_events(client.persist().as_ref(), "mock-1").await;
    assert_gap_free(&events);
    assert!(events.iter().any(|e| e.payload["method"] == "mock/echo"));
    assert!(
        events
            .iter()
            .any(|e| e.payload["method"] == "session/prompt")
    );
    // Each reply is recorded once, though it came both in the POST body and on the stream.
    let replies = events
        .iter()
        .filter(|e| e.payload.get("result").is_some())
        .count();
    assert_eq!(
        replies, 3,
        "initialize, session/new and session/prompt replies, once each"
    );
    // Subscribers heard every persisted event, in order.
    let heard: Vec<i64> = drain(&mut rx)
        .into_iter()
        .filter_map(|n| match n {
            SessionNotice::Event(e) => Some(e.event_index),
            _ => None,
        })
        .collect();
    assert_eq!(
        heard,
        events.iter().map(|e| e.event_index).collect::<Vec<_>>()
    );
    session.destroy().await.unwrap();
    assert!(
        client
            .persist()
            .get_session("mock-1")
            .await
            .unwrap()
            .unwrap()
            .destroyed_at
            .is_some()
    );
    sa.stop().await;
}

#[tokio::test]
async fn scripted_agent_streams_tools_plans_thoughts_and_permissions() {
    let Scripted {
        sa,
        client,
        session,
        mut rx,
        ..
    } = scripted_session("pi-1").await;
    assert!(
        session
            .record()
            .await
            .agent_session_id
            .is_some_and(|id| id.starts_with("scripted-1-"))
    );

    assert_eq!(
        session.prompt("tools").await.unwrap().stop_reason,
        "end_turn"
    );
    let kinds: Vec<String> = drain(&mut rx).iter().filter_map(update_kind).collect();
    for k in [
        "agent_thought_chunk",
        "plan",
        "tool_call",
        "tool_call_update",
        "agent_message_chunk",
    ] {
        assert!(kinds.iter().any(|x| x == k), "missing {k} in {kinds:?}");
    }

    let turn = prompt_in_background(&session, "permission please");
    let seen = wait_for(&mut rx, "a permission request", |n| {
        matches!(n, SessionNotice::PermissionRequested { .. })
    })
    .await;
    let (request_id, params) = match seen.last().unwrap() {
        SessionNotice::PermissionRequested {
            request_id, params, ..
        } => (request_id.clone(), params.clone()),
        _ => unreachable!(),
    };
    assert_eq!(params["options"][0]["optionId"], "allow");
    assert_eq!(session.pending_permissions(), vec![request_id.clone()]);
    assert!(
        session
            .respond_permission(&request_id, "no-such-option")
            .await
            .is_err()
    );
    session
        .respond_permission(&request_id, "allow")
        .await
        .unwrap();
    assert!(
        session
            .respond_permission(&request_id, "allow")
            .await
            .is_err(),
        "only the first answer counts"
    );
    assert_eq!(turn.await.unwrap().unwrap().stop_reason, "end_turn");
    let texts: Vec<String> = drain(&mut rx).iter().filter_map(chunk_text).collect();
    assert!(
        texts.contains(&"permission: allow".to_string()),
        "{texts:?}"
    );

    let events = all_events(client.persist().as_ref(), "pi-1").await;
    assert_gap_free(&events);
    // The permission request and our reply are both in the record.
    assert!(
        events
            .iter()
            .any(|e| e.payload["method"] == "session/request_permission")
    );
    assert!(
        events
            .iter()
            .any(|e| e.payload["result"]["outcome"]["optionId"] == "allow")
    );
    sa.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_turn_and_the_session_lives_on() {
    let Scripted {
        sa,
        session,
        mut rx,
        ..
    } = scripted_session("pi-cancel").await;
    let turn = prompt_in_background(&session, "slow");
    wait_for(&mut rx, "the agent working", |n| {
        chunk_text(n).is_some_and(|t| t.starts_with("working 3"))
    })
    .await;
    session.cancel().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), turn)
        .await
        .expect("the turn ends")
        .unwrap()
        .unwrap();
    assert_eq!(end.stop_reason, "cancelled");

    let before = session.record().await;
    assert_eq!(
        session.prompt("stream 3").await.unwrap().stop_reason,
        "end_turn"
    );
    let after = session.record().await;
    assert_eq!(
        before.agent_session_id, after.agent_session_id,
        "same remote session"
    );
    // An agent that reopens sessions gets a fresh connection after a Stop (nothing of the stopped
    // turn can leak into the next), quietly: the room is not told of a restore.
    assert_ne!(before.last_connection_id, after.last_connection_id);
    assert!(
        !drain(&mut rx)
            .iter()
            .any(|n| matches!(n, SessionNotice::Restored { .. })),
        "no restore is reported"
    );
    assert!(after.destroyed_at.is_none());
    sa.stop().await;
}

#[tokio::test]
async fn a_restarted_sandbox_agent_gets_the_session_back_with_replayed_history() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent_without_load().await;
    let (port, token) = (sa.port(), sa.endpoint().token.clone());
    let client = client(&sa, &pool);
    let (tx, mut rx) = notices();
    let session = client
        .create_session(request("pi-restart", "pi"), tx)
        .await
        .unwrap();
    session.prompt("remember the word pelican").await.unwrap();
    let first_connection = session.record().await.last_connection_id;

    sa.kill().await;
    let sa = SandboxAgentProcess::start(ProcessOptions {
        bin: Some(sandbox_agent_bin()),
        port: Some(port),
        token,
        extra_path: vec![fixtures_bin()],
        env: vec![("PI_ACP_NO_LOAD".into(), "1".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let end = session.prompt("echo").await.unwrap();
    assert_eq!(end.stop_reason, "end_turn");
    let seen = drain(&mut rx);
    assert!(
        seen.iter().any(
            |n| matches!(n, SessionNotice::Restored { replayed_events, full_memory: false } if *replayed_events > 0)
        )
    );
    let echoed = seen.iter().rev().find_map(chunk_text).expect("the echo");
    let blocks: Vec<String> = serde_json::from_str(&echoed).unwrap();
    assert_eq!(blocks.len(), 2, "replayed history, then the prompt");
    assert!(blocks[0].starts_with("Previous session history is replayed below"));
    assert!(blocks[0].contains("remember the word pelican"));
    assert_eq!(blocks[1], "echo");

    let record = session.record().await;
    assert_ne!(record.last_connection_id, first_connection);
    let events = all_events(client.persist().as_ref(), "pi-restart").await;
    assert_gap_free(&events);
    sa.stop().await;
}

#[tokio::test]
async fn a_session_resumes_in_a_new_client_after_a_process_restart() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    {
        let (tx, _rx) = notices();
        let session = client(&sa, &pool)
            .create_session(request("pi-wake", "pi"), tx)
            .await
            .unwrap();
        session.prompt("the answer is 42").await.unwrap();
        session.close().await;
    }
    let (tx, _rx) = notices();
    let client = client(&sa, &pool);
    let before = client
        .persist()
        .max_event_index("pi-wake")
        .await
        .unwrap()
        .unwrap();
    let session = client
        .resume_or_create_session(request("pi-wake", "pi"), tx)
        .await
        .unwrap();
    session.prompt("recall").await.unwrap();
    let events = all_events(client.persist().as_ref(), "pi-wake").await;
    assert_gap_free(&events);
    assert!(events.len() as i64 > before);
    // The agent reopened its own session, and remembers; its replay of it was not recorded again.
    let after: Vec<_> = events.iter().filter(|e| e.event_index > before).collect();
    assert!(after.iter().any(|e| e.payload["method"] == "session/load"));
    assert!(!after.iter().any(|e| e.payload["method"] == "session/new"));
    assert!(
        !after
            .iter()
            .any(|e| e.payload["params"]["update"]["sessionUpdate"] == "user_message_chunk"),
        "the replayed conversation is not recorded twice"
    );
    let said = after
        .iter()
        .rev()
        .find_map(|e| e.payload["params"]["update"]["content"]["text"].as_str())
        .unwrap();
    assert_eq!(said, r#"I remember: ["the answer is 42"]"#);
    sa.stop().await;
}

#[tokio::test]
async fn a_cut_event_stream_resumes_without_losing_or_doubling_envelopes() {
    let Scripted {
        sa,
        client,
        session,
        mut rx,
        ..
    } = scripted_session("pi-cut").await;
    let turn = prompt_in_background(&session, "stream 600");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        session.cut_event_stream().await;
    }
    assert_eq!(turn.await.unwrap().unwrap().stop_reason, "end_turn");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = drain(&mut rx);
    assert!(
        !seen
            .iter()
            .any(|n| matches!(n, SessionNotice::StreamGap { .. }))
    );
    let texts: Vec<String> = seen.iter().filter_map(chunk_text).collect();
    let expected: Vec<String> = (0..600).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(texts, expected);
    assert_gap_free(&all_events(client.persist().as_ref(), "pi-cut").await);
    sa.stop().await;
}

#[tokio::test]
async fn malformed_envelopes_are_reported_and_nothing_else_is_lost() {
    let Scripted {
        sa,
        session,
        mut rx,
        ..
    } = scripted_session("pi-bad").await;
    assert_eq!(
        session.prompt("malformed").await.unwrap().stop_reason,
        "end_turn"
    );
    let seen = drain(&mut rx);
    assert!(
        seen.iter()
            .any(|n| matches!(n, SessionNotice::Malformed(e) if e.contains("jsonrpc"))),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .filter_map(chunk_text)
            .any(|t| t == "after garbage")
    );
    // sandbox-agent's own report of the agent's non-JSON output is kept as an event.
    assert!(seen.iter().any(
        |n| matches!(n, SessionNotice::Event(e) if e.payload["method"] == "_adapter/invalid_stdout")
    ));
    sa.stop().await;
}

#[tokio::test]
async fn other_agent_requests_get_an_error_and_destroy_cancels_pending_permissions() {
    let Scripted {
        sa,
        client,
        session,
        mut rx,
        ..
    } = scripted_session("pi-destroy").await;
    // Huddle offers agents no file system: the request is answered with "method not found".
    session.prompt("read file").await.unwrap();
    let texts: Vec<String> = drain(&mut rx).iter().filter_map(chunk_text).collect();
    assert!(texts.contains(&"fs: error -32601".to_string()), "{texts:?}");

    let turn = prompt_in_background(&session, "permission");
    wait_for(&mut rx, "a permission request", |n| {
        matches!(n, SessionNotice::PermissionRequested { .. })
    })
    .await;
    session.destroy().await.unwrap();
    assert!(session.pending_permissions().is_empty());
    let seen = wait_for(
        &mut rx,
        "the cancelled permissions",
        |n| matches!(n, SessionNotice::PermissionsCancelled(ids) if ids.len() == 1),
    )
    .await;
    assert!(!seen.is_empty());
    // The turn does not hang: it ends (the connection is closed under it).
    let _ = tokio::time::timeout(Duration::from_secs(10), turn)
        .await
        .expect("the turn ends");
    let events = all_events(client.persist().as_ref(), "pi-destroy").await;
    assert!(
        events
            .iter()
            .any(|e| e.payload["result"]["outcome"]["outcome"] == "cancelled"),
        "the agent was told the request is cancelled"
    );
    let record = client
        .persist()
        .get_session("pi-destroy")
        .await
        .unwrap()
        .unwrap();
    assert!(record.destroyed_at.is_some());
    sa.stop().await;
}
