//! Benchmarks of the Sandbox Agent client and its Postgres store; prints its figures.
//! Run with `scripts/bench.sh` (a throw-away Postgres and the real sandbox-agent).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use huddle::sandbox_agent::{
    CreateSessionRequest, PostgresPersist, Sender, SessionEvent, SessionNotice,
    SessionPersistDriver, SessionRecord,
};
use serde_json::json;

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        agent: "pi".into(),
        agent_session_id: None,
        last_connection_id: "bench".into(),
        created_at: 0,
        destroyed_at: None,
        session_init: None,
        sandbox_id: None,
    }
}

#[tokio::main]
async fn main() {
    let (pool, _) = common::fresh_db().await;
    let persist = PostgresPersist::new(pool.clone());

    // 1. Events persisted per second from a fast-streaming agent, through the real sandbox-agent.
    let sa = common::start_sandbox_agent(None, None).await;
    let client = common::client(&sa, &pool);
    let (tx, mut rx) = common::notices();
    let counts = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64, 0u64)));
    let counting = counts.clone();
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            let mut c = counting.lock().unwrap();
            match n {
                SessionNotice::StreamGap {
                    last_seen,
                    resumed_at,
                } => {
                    c.0 += 1;
                    c.1 += resumed_at - last_seen - 1;
                }
                SessionNotice::StreamHealed { recovered } => c.2 += recovered,
                _ => {}
            }
        }
    });
    let request = CreateSessionRequest {
        id: "stream".into(),
        agent: "pi".into(),
        cwd: Some("/tmp".into()),
        sandbox_id: None,
        options: Default::default(),
        fork_of: None,
    };
    let s = client.create_session(request, tx).await.unwrap();
    let chunk_count = |pool: sqlx::PgPool| async move {
        let row: (i64,) = sqlx::query_as(
            "SELECT count(*) FROM sandbox_agent.events WHERE session_id = 'stream' \
             AND payload_json #>> '{params,update,sessionUpdate}' = 'agent_message_chunk'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        row.0
    };
    // A burst as fast as the agent can write, then a steady 2,000 events/s (ten times a fast model).
    for (label, prompt, n) in [
        ("burst", "stream 20000", 20_000),
        ("paced at 2000/s", "pace 10000 2000", 10_000),
    ] {
        let before = persist
            .max_event_index("stream")
            .await
            .unwrap()
            .unwrap_or(0);
        let chunks_before = chunk_count(pool.clone()).await;
        let t = Instant::now();
        s.prompt(prompt).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let events = persist.max_event_index("stream").await.unwrap().unwrap() - before;
        let chunks = chunk_count(pool.clone()).await - chunks_before;
        println!(
            "streaming agent, {label}: {events} events persisted in {secs:.2} s = {:.0} events/s (each in Postgres before it is announced); {chunks} of {n} chunks recorded",
            events as f64 / secs,
        );
    }
    sa.stop().await;
    let (gaps, lost, recovered) = *counts.lock().unwrap();
    println!(
        "    sandbox-agent's stream skipped envelopes: {recovered} recovered by resuming from Last-Event-ID; {lost} lost in {gaps} reported gap(s)"
    );

    // 2. Paging through a 100,000-event session.
    persist.update_session(&session("big")).await.unwrap();
    let t = Instant::now();
    for chunk in 0..100 {
        let batch: Vec<SessionEvent> = (1..=1000)
            .map(|i| {
                let index = chunk * 1000 + i;
                SessionEvent {
                    id: format!("big-{index}"),
                    event_index: index,
                    session_id: "big".into(),
                    created_at: index,
                    connection_id: "bench".into(),
                    sender: Sender::Agent,
                    payload: json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "x",
                        "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": format!("token {index} ")}}}}),
                }
            })
            .collect();
        persist.insert_events(&batch).await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "bulk insert: 100000 events in batches of 1000 in {secs:.2} s = {:.0} events/s",
        100_000.0 / secs
    );
    for limit in [100, 1000] {
        let t = Instant::now();
        let (mut cursor, mut seen, mut pages) = (None, 0usize, 0usize);
        loop {
            let page = persist
                .list_events("big", cursor.as_deref(), limit)
                .await
                .unwrap();
            seen += page.items.len();
            pages += 1;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, 100_000);
        println!(
            "paging a 100000-event session, {limit} per page: {pages} pages in {:.0} ms (keyset cursor)",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }

    // 3. The next event index at wake.
    let rounds = 1000;
    let t = Instant::now();
    for _ in 0..rounds {
        assert_eq!(persist.max_event_index("big").await.unwrap(), Some(100_000));
    }
    println!(
        "next event index at wake (100000-event session): {:.0} µs per lookup (mean of {rounds})",
        t.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN SELECT event_index FROM sandbox_agent.events WHERE session_id = 'big' ORDER BY event_index DESC LIMIT 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    println!(
        "  its plan: {}",
        plan.iter()
            .map(|p| p.0.trim())
            .collect::<Vec<_>>()
            .join(" / ")
    );
}
