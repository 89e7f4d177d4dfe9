//! The Postgres persist driver: SDK record shapes, keyset pages, batches, the next index.

use huddle::sandbox_agent::{
    PostgresPersist, Sender, SessionEvent, SessionPersistDriver, SessionRecord,
};
use serde_json::json;

fn record(id: &str, created_at: i64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        agent: "mock".into(),
        agent_session_id: None,
        last_connection_id: "c1".into(),
        created_at,
        destroyed_at: None,
        session_init: Some(json!({"cwd": "/", "mcpServers": []})),
        sandbox_id: Some("local".into()),
    }
}

fn event(session: &str, i: i64) -> SessionEvent {
    SessionEvent {
        id: format!("{session}-{i}"),
        event_index: i,
        session_id: session.into(),
        created_at: 1_000 + i,
        connection_id: "c1".into(),
        sender: if i % 2 == 0 {
            Sender::Agent
        } else {
            Sender::Client
        },
        payload: json!({"jsonrpc": "2.0", "method": "session/update", "params": {"i": i}}),
    }
}

#[tokio::test]
async fn sessions_round_trip_and_page_by_creation_time() {
    let (pool, _) = crate::common::fresh_db().await;
    let p = PostgresPersist::new(pool);
    for (i, id) in ["b", "a", "c", "d", "e"].iter().enumerate() {
        p.update_session(&record(id, 100 + (i as i64 % 2)))
            .await
            .unwrap();
    }
    let mut updated = record("a", 101);
    updated.agent_session_id = Some("remote".into());
    updated.destroyed_at = Some(5);
    p.update_session(&updated).await.unwrap();
    assert_eq!(p.get_session("a").await.unwrap(), Some(updated));
    assert_eq!(p.get_session("zz").await.unwrap(), None);

    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = p.list_sessions(cursor.as_deref(), 2).await.unwrap();
        ids.extend(page.items.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(ids, ["b", "c", "e", "a", "d"]);
    assert!(p.list_sessions(Some("garbage"), 2).await.is_err());
}

#[tokio::test]
async fn events_page_by_index_and_batches_are_idempotent() {
    let (pool, _) = crate::common::fresh_db().await;
    let p = PostgresPersist::new(pool);
    p.update_session(&record("s", 1)).await.unwrap();
    assert_eq!(p.max_event_index("s").await.unwrap(), None);
    let batch: Vec<_> = (1..=25).map(|i| event("s", i)).collect();
    p.insert_events(&batch).await.unwrap();
    p.insert_events(&batch[20..]).await.unwrap(); // a retried batch
    p.insert_event(&event("s", 26)).await.unwrap();
    assert_eq!(p.max_event_index("s").await.unwrap(), Some(26));

    let first = p.list_events("s", None, 10).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.next_cursor.as_deref(), Some("10"));
    let rest = p.list_events("s", Some("20"), 10).await.unwrap();
    assert_eq!(
        rest.items.iter().map(|e| e.event_index).collect::<Vec<_>>(),
        (21..=26).collect::<Vec<_>>()
    );
    assert_eq!(rest.next_cursor, None);
    assert_eq!(rest.items[0], event("s", 21));

    let tail = p.last_events("s", 3).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.event_index).collect::<Vec<_>>(),
        vec![24, 25, 26]
    );
    // The same index twice under another id is refused: the order stays gap-free and unique.
    let mut dup = event("s", 5);
    dup.id = "other".into();
    assert!(p.insert_event(&dup).await.is_err());
}
