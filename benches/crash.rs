//! The crash boundary, counted: the real `huddle` binary killed with SIGKILL again and again while
//! the agent streams (its sandbox runs on and is adopted by the next Huddle), optionally with the
//! machine busy. Prints how many kills, chunks, chunks lost and chunks doubled. Run with
//! `BENCH_ONLY=crash scripts/bench.sh` (`CRASH_KILLS`, default 50; `CRASH_BUSY`, busy loops beside).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use huddle::model::RoomEvent;
use rand::Rng;
use serde_json::json;

const CHUNKS: usize = 400;
/// Chunks per second: a turn streams for 10 s, and is killed under two or three times.
const RATE: usize = 40;

fn start(db_url: &str, data: &std::path::Path, port: u16) -> tokio::process::Child {
    let path = format!(
        "{}:{}",
        common::fixtures_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    tokio::process::Command::new(env!("CARGO_BIN_EXE_huddle"))
        .env("DATABASE_URL", db_url)
        .env("HUDDLE_ADDR", format!("127.0.0.1:{port}"))
        .env("HUDDLE_DATA_DIR", data)
        .env("HUDDLE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .env("PATH", path)
        .env("LEPTOS_OUTPUT_NAME", "huddle")
        .env("RUST_LOG", "warn")
        .env_remove("SANDBOX_AGENT_URL")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The room's stream, once the killed process's lease has run out.
async fn events(http: &reqwest::Client, base: &str, ws: &str, after: i64) -> common::Sse {
    loop {
        let res = http
            .get(format!("{base}/api/workspace/{ws}/events"))
            .bearer_auth(common::ADMIN_TOKEN)
            .header("last-event-id", after.to_string())
            .send()
            .await
            .unwrap();
        if res.status().is_success() {
            return common::Sse::from_response(res);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let busy: usize = std::env::var("CRASH_BUSY")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    let mut loops = Vec::new();
    for _ in 0..busy {
        loops.push(
            std::process::Command::new("python3")
                .args(["-c", "while True: pass"])
                .spawn()
                .unwrap(),
        );
    }
    let (_pool, db_url) = common::fresh_db().await;
    let data = std::env::temp_dir().join(format!("huddle-bench-crash-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut huddle = start(&db_url, &data, port);
    common::wait_up(&http, &base).await;
    let created: serde_json::Value = http
        .post(format!("{base}/api/workspace/create"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"agent": "pi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = created["workspaceId"].as_str().unwrap().to_string();
    let (mut done, mut turns, mut lost, mut doubled, mut chunks) = (0, 0, 0usize, 0usize, 0usize);
    let mut head = 0;
    let started = Instant::now();
    while done < kills {
        let prompt: serde_json::Value = http
            .post(format!("{base}/api/workspace/prompt"))
            .bearer_auth(common::ADMIN_TOKEN)
            .json(&json!({"workspaceId": ws, "text": format!("pace {CHUNKS} {RATE}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let prompt_seq = prompt["seq"].as_i64().expect("the prompt was taken");
        turns += 1;
        // Kill it at random moments of the turn, until the turn has ended.
        let mut ended = false;
        while !ended {
            let mut sse = events(&http, &base, &ws, head).await;
            let wait = Duration::from_millis(rand::rng().random_range(300..2500));
            let until = tokio::time::Instant::now() + wait;
            while let Ok(e) = tokio::time::timeout_at(until, sse.next()).await {
                head = e.seq;
                if matches!(&e.event, RoomEvent::TurnEnded { prompt_seq: p, .. } if *p == prompt_seq)
                {
                    ended = true;
                    break;
                }
            }
            if ended || done >= kills {
                continue;
            }
            huddle.start_kill().unwrap();
            huddle.wait().await.unwrap();
            done += 1;
            huddle = start(&db_url, &data, port);
            common::wait_up(&http, &base).await;
        }
        // Every chunk of the turn once, in order.
        let all: serde_json::Value = http
            .post(format!("{base}/api/workspace/snapshot"))
            .bearer_auth(common::ADMIN_TOKEN)
            .json(&json!({"workspaceId": ws}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries: Vec<huddle::model::RoomEntry> =
            serde_json::from_value(all["entries"].clone()).unwrap();
        let texts: Vec<String> = entries
            .iter()
            .filter(|e| e.seq > 0)
            .skip_while(|e| e.seq <= prompt_seq)
            .take_while(|e| !matches!(&e.event, RoomEvent::TurnEnded { .. }))
            .filter_map(common::entry_text)
            .collect();
        let mut seen = vec![0usize; CHUNKS];
        for t in &texts {
            if let Ok(i) = t.trim().parse::<usize>()
                && i < CHUNKS
            {
                seen[i] += 1;
            }
        }
        chunks += CHUNKS;
        lost += seen.iter().filter(|&&n| n == 0).count();
        doubled += seen.iter().filter(|&&n| n > 1).count();
    }
    println!(
        "crash boundary: {done} kills -9 of Huddle over {turns} turns ({busy} busy loop(s) beside), {chunks} chunks: \
         {lost} lost, {doubled} doubled ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    huddle.start_kill().unwrap();
    huddle.wait().await.unwrap();
    // The sandbox the last one left: the next Huddle would adopt it; here it goes.
    if let Ok(dir) = std::fs::read_dir(data.join("sandboxes")) {
        for d in dir.flatten() {
            huddle::sandbox_agent::process::SandboxAgentProcess::stop_left_behind(
                &d.path().join("server.json"),
            )
            .await;
        }
    }
    for mut l in loops {
        let _ = l.kill();
    }
    let _ = std::fs::remove_dir_all(&data);
}
