//! Huddle keeps everything when the parts under it restart: its own embedded Postgres stopped for
//! 15 s and started again in the middle of a turn, with the real sandbox-agent streaming meanwhile;
//! and while it is down, people are told so at once and shutdown does not hang.

use std::time::Duration;

use crate::common::*;
use huddle::embedded_postgres::EmbeddedPostgres;
use huddle::model::RoomEvent;
use huddle::sandbox_agent::SessionPersistDriver;

/// A room on a Postgres of its own (so that the test can stop it), with the real sandbox-agent
/// and a workspace of the scripted agent that Ada watches.
struct OwnPostgres {
    dir: std::path::PathBuf,
    pg: EmbeddedPostgres,
    port: u16,
    pool: sqlx::PgPool,
    sa: huddle::sandbox_agent::process::SandboxAgentProcess,
    app: TestApp,
    ws: String,
    sse: Sse,
}

async fn room_on_own_postgres() -> OwnPostgres {
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
    let sse = app.events(&ws, "ada", None).await;
    OwnPostgres {
        dir,
        pg,
        port,
        pool,
        sa,
        app,
        ws,
        sse,
    }
}

#[tokio::test]
async fn a_postgres_restart_mid_turn_loses_nothing() {
    let OwnPostgres {
        dir,
        pg,
        port,
        pool,
        sa,
        app,
        ws,
        mut sse,
    } = room_on_own_postgres().await;
    app.prompt(&ws, "ada", "pace 120 40").await;
    sse.until(|e| matches!(&e.event, RoomEvent::SessionEvent(_)))
        .await;

    // Bob's token is made while Postgres is up.
    app.token(&ws, "bob").await;
    // Postgres goes away for 15 s in the middle of the turn, then comes back on its port.
    pg.stop().await;
    let outage = std::time::Instant::now();
    // Meanwhile people hear so at once: actions within 2 s, the health check within 1 s.
    let started = std::time::Instant::now();
    let (status, body) = app
        .post("prompt", serde_json::json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob", "text": "hello?"}))
        .await;
    let prompt_took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable");
    assert!(
        prompt_took < Duration::from_secs(2),
        "prompt answered in {prompt_took:?}"
    );
    let started = std::time::Instant::now();
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let health_took = started.elapsed();
    assert_eq!(res.status(), 503);
    assert!(
        health_took < Duration::from_secs(1),
        "healthz answered in {health_took:?}"
    );
    let started = std::time::Instant::now();
    let (status, _) = app
        .post(
            "info",
            serde_json::json!({"workspaceId": "0123456789abcdef0123456789abcdef"}),
        )
        .await;
    let wake_took = started.elapsed();
    assert_eq!(status, 503, "waking a room needs the database");
    assert!(
        wake_took < Duration::from_secs(2),
        "answered in {wake_took:?}"
    );
    eprintln!(
        "Postgres down: prompt 503 in {} ms, healthz 503 in {} ms, waking a room 503 in {} ms",
        prompt_took.as_millis(),
        health_took.as_millis(),
        wake_took.as_millis()
    );
    // Streams end (clients show "reconnecting"), and new ones are refused until it is back.
    let ended = tokio::time::timeout(Duration::from_secs(5), sse.closed()).await;
    assert!(
        ended.is_ok(),
        "the live stream ends while the log cannot be written"
    );
    assert_eq!(app.events_status(&ws).await, 503);
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(outage.elapsed())).await;
    drop(pg);
    let pg = EmbeddedPostgres::start_on(&dir, None, Some(port))
        .await
        .expect("restarts with its data");

    // The turn ends, and the room log and the session's events hold every chunk, once, in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries = huddle::store::room_log::list(
            &pool,
            &first_thread(&pool, &ws).await,
            0,
            i64::MAX,
            i64::MAX,
        )
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
            "the turn did not end: {:?}",
            entries
                .iter()
                .rev()
                .take(4)
                .map(|e| serde_json::to_string(&e.event)
                    .unwrap()
                    .chars()
                    .take(160)
                    .collect::<String>())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=entries.len() as i64).collect::<Vec<_>>(),
        "gap-free room log"
    );
    let chunks: Vec<String> = entries.iter().filter_map(entry_text).collect();
    assert_eq!(
        chunks,
        (0..120).map(|i| format!("{i} ")).collect::<Vec<_>>()
    );
    assert!(matches!(
        &entries.last().unwrap().event,
        RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "end_turn"
    ));
    let persist = huddle::sandbox_agent::PostgresPersist::new(pool.clone());
    let session = huddle::room::first_session_id(&ws);
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
    let head = huddle::store::room_log::head(&pool, &first_thread(&pool, &ws).await)
        .await
        .unwrap();
    assert!(head >= entries.len() as i64);
    pool.close().await;
    pg.stop().await;
    drop(pg);
    let pg = EmbeddedPostgres::start(&dir, None).await.unwrap();
    let pool = huddle::store::connect(pg.url()).await.unwrap();
    assert_eq!(
        huddle::store::room_log::head(&pool, &first_thread(&pool, &ws).await)
            .await
            .unwrap(),
        head
    );
    pool.close().await;
    pg.stop().await;
    sa.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_with_a_turn_running_and_postgres_down_takes_under_10_s() {
    let OwnPostgres {
        dir,
        pg,
        sa,
        app,
        ws,
        mut sse,
        ..
    } = room_on_own_postgres().await;
    app.prompt(&ws, "ada", "slow").await;
    sse.until(|e| matches!(&e.event, RoomEvent::SessionEvent(_)))
        .await;
    pg.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown finishes within 10 s");
    eprintln!(
        "shutdown with a turn running and Postgres down: {} ms",
        started.elapsed().as_millis()
    );
    sa.stop().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_idle_room_takes_prompts_again_once_postgres_is_back() {
    let OwnPostgres {
        dir,
        pg,
        port,
        pool,
        sa,
        app,
        ws,
        mut sse,
    } = room_on_own_postgres().await;
    app.prompt(&ws, "ada", "hello").await;
    sse.until(is_turn_end).await;

    // Postgres goes away while nothing is being written: a prompt is refused...
    pg.stop().await;
    let body = serde_json::json!({"workspaceId": ws, "userId": "ada", "displayName": "ada", "text": "again"});
    let (status, _) = app.post("prompt", body.clone()).await;
    assert_eq!(status, 503);
    drop(pg);
    let pg = EmbeddedPostgres::start_on(&dir, None, Some(port))
        .await
        .unwrap();

    // ...and once it is back, prompts are taken again without anything else happening first.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, reply) = app.post("prompt", body.clone()).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {status} {reply}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
    sa.stop().await;
    pool.close().await;
    pg.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
