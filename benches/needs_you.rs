//! Needs you, measured against the real `huddle` binary in its own process (so its memory can be
//! read), a throw-away Postgres and the real sandbox-agent: the time from a permission request to
//! the item in another person's inbox (their inbox stream's event, then `/api/inbox`) and to
//! the push service (p50/p99 over repeated requests); then one request in a workspace of 1,000
//! people with push subscriptions: until every push arrived, and the server's memory.
//! Run with `BENCH_ONLY=needs_you scripts/bench.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use base64::Engine;
use common::percentile;
use futures::StreamExt;
use huddle::model::RoomEvent;
use serde_json::{Value, json};

const ROUNDS: usize = 40;
const PEOPLE: i64 = 1000;

/// When each endpoint got its pushes.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

async fn push(State(got): State<Arrivals>, Path(name): Path<String>) -> axum::http::StatusCode {
    got.lock()
        .unwrap()
        .entry(name)
        .or_default()
        .push(Instant::now());
    axum::http::StatusCode::CREATED
}

fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}/api/{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap_or(Value::Null)
    }

    async fn member(&self, ws: &str, name: &str) -> (String, String) {
        let token = self
            .post(
                common::ADMIN_TOKEN,
                "workspace/tokens/create",
                json!({"workspaceId": ws, "name": name, "role": "member"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let id = self.post(&token, "me", json!({})).await["personId"]
            .as_str()
            .unwrap()
            .to_string();
        (token, id)
    }
}

#[tokio::main]
async fn main() {
    let (pool, db_url) = common::fresh_db().await;
    let sa = common::start_sandbox_agent(None, None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_huddle"))
        .env("DATABASE_URL", &db_url)
        .env("SANDBOX_AGENT_URL", &sa.endpoint().base_url)
        .env("SANDBOX_AGENT_TOKEN", sa.endpoint().token.clone().unwrap())
        .env("HUDDLE_ADDR", format!("127.0.0.1:{port}"))
        .env("HUDDLE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .env(
            "HUDDLE_DATA_DIR",
            std::env::temp_dir().join(format!("huddle-bench-needs-you-{port}")),
        )
        .env("HUDDLE_PROMPTS_PER_MINUTE", "100000")
        .env("HUDDLE_PUSH_ALLOW_HTTP", "true")
        .env("HUDDLE_OUTBOUND_ALLOW_PRIVATE", "true")
        .env("LEPTOS_OUTPUT_NAME", "huddle")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    common::wait_up(&api.http, &api.base).await;
    let pid = child.id().unwrap();

    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/push/{name}", axum::routing::post(push))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ws = api
        .post(
            common::ADMIN_TOKEN,
            "workspace/create",
            json!({"agent": "pi"}),
        )
        .await["workspaceId"]
        .as_str()
        .unwrap()
        .to_string();
    let (ada, _) = api.member(&ws, "Ada").await;
    let (bob, _) = api.member(&ws, "Bob").await;
    let (carol, _) = api.member(&ws, "Carol").await;
    // Bob's browser gets pushes (he has no tab open); Carol has Huddle open.
    let secret = web_push_native::p256::SecretKey::random(
        &mut web_push_native::p256::elliptic_curve::rand_core::OsRng,
    );
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let p256dh = b64.encode(secret.public_key().to_encoded_point(false).as_bytes());
    let auth = b64.encode(rand::random::<[u8; 16]>());
    api.post(
        &bob,
        "push/subscribe",
        json!({"endpoint": format!("{push_base}/push/bob"), "keys": {"p256dh": p256dh, "auth": auth}}),
    )
    .await;
    let carol_stream = api
        .http
        .get(format!("{}/api/inbox/events", api.base))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    let mut carol_events = Box::pin(eventsource_stream::Eventsource::eventsource(
        carol_stream.bytes_stream(),
    ));
    let room = api
        .http
        .get(format!("{}/api/workspace/{ws}/events", api.base))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    let mut room = common::Sse::from_response(room);

    let (mut to_inbox, mut to_push) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        api.post(
            &ada,
            "workspace/prompt",
            json!({"workspaceId": ws, "text": "permission"}),
        )
        .await;
        let asked = room
            .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
            .await;
        let t0 = Instant::now();
        let asked = asked.last().unwrap();
        let request_id = match &asked.event {
            RoomEvent::PermissionRequested { request_id, .. } => request_id.clone(),
            _ => unreachable!(),
        };
        // Carol's page: the stream says her inbox changed; it fetches the inbox.
        loop {
            let ev = carol_events.next().await.unwrap().unwrap();
            if ev.event != "inbox" || !ev.data.contains(&ws) {
                continue;
            }
            let items = api.post(&carol, "inbox", json!({})).await;
            if items["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["seq"] == asked.seq)
            {
                break;
            }
        }
        to_inbox.push(t0.elapsed().as_secs_f64() * 1000.0);
        loop {
            if let Some(at) = arrivals
                .lock()
                .unwrap()
                .get("bob")
                .and_then(|a| a.get(round).copied())
            {
                to_push.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        api.post(
            &ada,
            "workspace/permission",
            json!({"workspaceId": ws, "requestId": request_id, "optionId": "allow"}),
        )
        .await;
        room.until(common::is_turn_end).await;
    }
    to_inbox.sort_by(f64::total_cmp);
    to_push.sort_by(f64::total_cmp);
    println!(
        "permission request -> another person's inbox (stream event + /api/inbox): p50 {:.1} ms, p99 {:.1} ms ({ROUNDS} requests)",
        percentile(&to_inbox, 0.5),
        percentile(&to_inbox, 0.99)
    );
    println!(
        "permission request -> the push service (encrypted, VAPID-signed): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&to_push, 0.5),
        percentile(&to_push, 0.99)
    );

    // A workspace of a thousand people, each with a browser subscribed.
    sqlx::query(
        "INSERT INTO people (id, display_name) SELECT 'bench' || g, 'Bench ' || g FROM generate_series(1, $1) g",
    )
    .bind(PEOPLE)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO memberships (workspace_id, person_id, role) SELECT $1, 'bench' || g, 'member' FROM generate_series(1, $2) g",
    )
    .bind(&ws)
    .bind(PEOPLE)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO push_subscriptions (endpoint, person_id, p256dh, auth) \
         SELECT $1 || '/push/f' || g, 'bench' || g, $2, $3 FROM generate_series(1, $4) g",
    )
    .bind(&push_base)
    .bind(&p256dh)
    .bind(&auth)
    .bind(PEOPLE)
    .execute(&pool)
    .await
    .unwrap();
    let before = rss(pid);
    let sent = Instant::now();
    api.post(
        &ada,
        "workspace/prompt",
        json!({"workspaceId": ws, "text": "permission"}),
    )
    .await;
    room.until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let asked_after = sent.elapsed();
    let t0 = Instant::now();
    loop {
        let n = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with('f'))
            .count() as i64;
        if n == PEOPLE {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{n} of {PEOPLE} pushes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_pushed = t0.elapsed();
    let after = rss(pid);
    println!(
        "one permission request to {PEOPLE} subscribed people: the request reached the room {:.0} ms after the prompt \
         (its inbox and outbox rows written with it), all {PEOPLE} pushes at the push service {:.2} s later; \
         server RSS {} -> {} KiB (high-water {} KiB)",
        asked_after.as_secs_f64() * 1000.0,
        all_pushed.as_secs_f64(),
        before.0,
        after.0,
        after.1
    );
    let _ = child.kill().await;
    sa.stop().await;
}
