//! Huddle keeps everything when the parts under it restart: its own embedded Postgres stopped and
//! started again in the middle of a turn, with the real sandbox-agent streaming meanwhile.

mod common;

use std::time::Duration;

use common::*;
use huddle::embedded_postgres::EmbeddedPostgres;
use huddle::model::RoomEvent;
use huddle::sandbox_agent::SessionPersistDriver;

#[tokio::test]
async fn a_postgres_restart_mid_turn_loses_nothing() {
    let dir =
        std::env::temp_dir().join(format!("huddle-pg-{}", huddle::sandbox_agent::random_id()));
    let pg = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("embedded Postgres starts");
    let port = pg.port().unwrap();
    let pool = huddle::store::connect(pg.url()).await.unwrap();
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, Duration::from_secs(300)).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "pace 120 40").await;
    sse.until(|e| matches!(&e.event, RoomEvent::SessionEvent(_)))
        .await;

    // Postgres goes away for a while in the middle of the turn, then comes back on its port.
    pg.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(pg);
    let pg = EmbeddedPostgres::start_on(&dir, None, Some(port))
        .await
        .expect("restarts with its data");

    // The turn ends, and the room log and the session's events hold every chunk, once, in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries = huddle::store::room_log::list(&pool, &ws, 0, i64::MAX, i64::MAX)
            .await
            .unwrap();
        if entries
            .iter()
            .any(|e| matches!(e.event, RoomEvent::TurnEnded { .. }))
        {
            break entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the turn did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=entries.len() as i64).collect::<Vec<_>>(),
        "gap-free room log"
    );
    let chunks: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            RoomEvent::SessionEvent(ev) => ev
                .payload
                .pointer("/params/update/content/text")?
                .as_str()
                .map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(
        chunks,
        (0..120).map(|i| format!("{i} ")).collect::<Vec<_>>()
    );
    assert!(matches!(
        &entries.last().unwrap().event,
        RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "end_turn"
    ));
    let persist = huddle::sandbox_agent::PostgresPersist::new(pool.clone());
    let session = huddle::room::session_id_of(&ws);
    let max = persist.max_event_index(&session).await.unwrap().unwrap();
    let count: (i64,) =
        sqlx::query_as("SELECT count(*) FROM sandbox_agent.events WHERE session_id = $1")
            .bind(&session)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count.0, max, "event indexes are gap-free");

    // The cluster keeps its data across a full stop and start.
    app.stop().await;
    pool.close().await;
    pg.stop().await;
    drop(pg);
    let pg = EmbeddedPostgres::start(&dir, None).await.unwrap();
    let pool = huddle::store::connect(pg.url()).await.unwrap();
    assert_eq!(
        huddle::store::room_log::head(&pool, &ws).await.unwrap(),
        entries.len() as i64
    );
    pool.close().await;
    pg.stop().await;
    sa.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
