//! What a sandbox per workspace costs, against the real `huddle` binary both ways: every agent on
//! one shared sandbox-agent (as before sandboxes: `HUDDLE_SANDBOX=remote` on one server), and a
//! bubblewrap sandbox per workspace (the default). Prints: wake of a sleeping room to its first
//! answer, a prompt's round trip in an awake room, memory per awake sandbox, and how many awake
//! sandboxes this machine holds. Run with `scripts/bench.sh` (`BENCH_ONLY=sandboxes`).

#[path = "../tests/fixtures/anthropic_api.rs"]
#[allow(dead_code)]
mod anthropic_api;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use huddle::model::RoomEvent;
use serde_json::{Value, json};

use common::BenchNode as Huddle;

/// A node with every agent on one shared sandbox-agent (`shared`), or a sandbox per workspace.
async fn start(
    db_url: &str,
    shared: Option<&huddle::sandbox_agent::Endpoint>,
    env: &[(&str, &str)],
) -> Huddle {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = shared.map(|e| e.token.clone().unwrap_or_default());
    let mut all = vec![("HUDDLE_IDLE_SLEEP_SECS", "2")];
    if let (Some(e), Some(token)) = (shared, token.as_deref()) {
        all.push(("SANDBOX_AGENT_URL", e.base_url.as_str()));
        all.push(("SANDBOX_AGENT_TOKEN", token));
    }
    all.extend_from_slice(env);
    Huddle::start(db_url, port, &all).await
}

impl Huddle {
    async fn events(&self, ws: &str, after: i64) -> common::Sse {
        let res = reqwest::Client::new()
            .get(format!("{}/api/workspace/{ws}/events", self.base))
            .bearer_auth(common::ADMIN_TOKEN)
            .header("last-event-id", after.to_string())
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        common::Sse::from_response(res)
    }

    /// A prompt, and the room's entries until its turn ends: (ms to the agent's first words, ms
    /// to the turn's end, the last seq).
    async fn turn(&self, ws: &str, sse: &mut common::Sse, t0: Instant) -> (f64, f64, i64) {
        self.post("prompt", json!({"workspaceId": ws, "text": "hello"}))
            .await;
        let mut first = None;
        loop {
            let e = sse.next().await;
            if first.is_none() && common::entry_text(&e).is_some() {
                first = Some(t0.elapsed().as_secs_f64() * 1000.0);
            }
            if matches!(e.event, RoomEvent::TurnEnded { .. }) {
                let end = t0.elapsed().as_secs_f64() * 1000.0;
                return (first.unwrap_or(end), end, e.seq);
            }
        }
    }
}

fn percentile(sorted: &mut [f64], p: f64) -> f64 {
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Proportional set size of a process and its descendants, in KiB (shared pages split).
fn pss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

fn descendants(pid: i32, out: &mut Vec<i32>) {
    out.push(pid);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
            for c in list.split_whitespace().filter_map(|c| c.parse().ok()) {
                descendants(c, out);
            }
        }
    }
}

/// The processes of every running local sandbox under a data directory, by sandbox.
fn sandbox_processes(data: &Path) -> Vec<Vec<i32>> {
    let Ok(dir) = std::fs::read_dir(data.join("sandboxes")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("server.json")).ok())
        .map(|t| {
            let trace: Value = serde_json::from_str(&t).unwrap();
            let mut pids = Vec::new();
            descendants(trace["pgid"].as_i64().unwrap() as i32, &mut pids);
            pids
        })
        .collect()
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const ROOMS: usize = 20;
const PROMPTS: usize = 50;

/// The figures of one way of running agents.
async fn measure(label: &str, huddle: &Huddle, shared: Option<i32>) {
    let mut rooms = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..ROOMS {
        let ws = huddle.post("create", json!({"agent": "pi"})).await["workspaceId"]
            .as_str()
            .unwrap()
            .to_string();
        let t0 = Instant::now();
        let mut sse = huddle.events(&ws, 0).await;
        let (first, _, head) = huddle.turn(&ws, &mut sse, t0).await;
        cold.push(first);
        rooms.push((ws, head));
    }
    // Memory per awake room's agent side: the sandboxes (or the shared server and its agents).
    let pss = match shared {
        Some(pid) => {
            let mut pids = Vec::new();
            descendants(pid, &mut pids);
            pss_kib(&pids) as f64 / ROOMS as f64
        }
        None => {
            let all = sandbox_processes(&huddle.data);
            assert_eq!(all.len(), ROOMS, "one sandbox per awake room");
            all.iter().map(|p| pss_kib(p)).sum::<u64>() as f64 / ROOMS as f64
        }
    };
    // Every room falls asleep (and its sandbox stops), then wakes for a prompt.
    tokio::time::sleep(Duration::from_secs(6)).await;
    if shared.is_none() {
        assert!(
            sandbox_processes(&huddle.data).is_empty(),
            "asleep, no sandbox runs"
        );
    }
    let mut wake_first = Vec::new();
    let mut wake_end = Vec::new();
    for (ws, head) in rooms.iter_mut() {
        let t0 = Instant::now();
        let mut sse = huddle.events(ws, *head).await;
        let (first, end, last) = huddle.turn(ws, &mut sse, t0).await;
        wake_first.push(first);
        wake_end.push(end);
        *head = last;
    }
    // A prompt's round trip in an awake room.
    let (ws, head) = &rooms[0];
    let mut sse = huddle.events(ws, *head).await;
    let mut warm = Vec::new();
    for _ in 0..PROMPTS {
        let (_, end, _) = huddle.turn(ws, &mut sse, Instant::now()).await;
        warm.push(end);
    }
    println!("{label}:");
    println!(
        "  first answer in a new workspace: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&mut cold, 0.5),
        percentile(&mut cold, 0.99)
    );
    println!(
        "  wake of a sleeping room to its first answer: p50 {:.0} ms, p99 {:.0} ms (to the turn's end: p50 {:.0} ms, p99 {:.0} ms)",
        percentile(&mut wake_first, 0.5),
        percentile(&mut wake_first, 0.99),
        percentile(&mut wake_end, 0.5),
        percentile(&mut wake_end, 0.99)
    );
    println!(
        "  a prompt in an awake room, to its turn's end: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&mut warm, 0.5),
        percentile(&mut warm, 0.99)
    );
    println!(
        "  memory per awake room on the agent's side (PSS, scripted python agent): {:.1} MiB",
        pss / 1024.0
    );
}

/// How many awake sandboxes this machine holds: `n` rooms awake at once, each with its agent.
async fn capacity(huddle: &Huddle, n: usize) {
    let before = mem_available_kib();
    let t = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..n {
        let ws = huddle.post("create", json!({"agent": "mock"})).await["workspaceId"]
            .as_str()
            .unwrap()
            .to_string();
        let mut sse = huddle.events(&ws, 0).await;
        huddle.turn(&ws, &mut sse, Instant::now()).await;
        streams.push(sse);
    }
    let took = t.elapsed().as_secs_f64();
    let all = sandbox_processes(&huddle.data);
    let pss: u64 = all.iter().map(|p| pss_kib(p)).sum();
    let procs: usize = all.iter().map(Vec::len).sum();
    let used = before.saturating_sub(mem_available_kib());
    let per = (used.max(pss) as f64) / all.len() as f64;
    let total = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap();
    println!(
        "{} awake sandboxes (the builtin mock agent) at once: made and answered in {took:.1} s; {procs} processes; \
         PSS {:.0} MiB, MemAvailable down {:.0} MiB: {:.1} MiB each, so this machine ({:.0} GiB) holds about {:.0} \
         (memory-bound; a real agent's own process adds its size)",
        all.len(),
        pss as f64 / 1024.0,
        used as f64 / 1024.0,
        per / 1024.0,
        total / 1024.0 / 1024.0,
        total * 0.9 / per
    );
    drop(streams);
}

/// What one awake sandbox with the real Claude Code in it takes (its session open, idle).
async fn claude_memory() {
    let api = anthropic_api::FakeAnthropic::start().await;
    let (_pool, db_url) = common::fresh_db().await;
    let huddle = start(
        &db_url,
        None,
        &[
            ("ANTHROPIC_BASE_URL", api.url.as_str()),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            (
                "HUDDLE_AGENT_ENV",
                "ANTHROPIC_BASE_URL,ANTHROPIC_API_KEY,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            ),
        ],
    )
    .await;
    let ws = huddle.post("create", json!({"agent": "claude"})).await["workspaceId"]
        .as_str()
        .unwrap()
        .to_string();
    // The first person in a new room opens the agent's session: Claude Code starts.
    let _sse = huddle.events(&ws, 0).await;
    let t = Instant::now();
    let mut pss = 0;
    while t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let info = huddle.post("info", json!({"workspaceId": ws})).await;
        let all = sandbox_processes(&huddle.data);
        if info["status"] == "idle" && all.iter().flatten().count() >= 5 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            pss = sandbox_processes(&huddle.data)
                .iter()
                .map(|p| pss_kib(p))
                .sum::<u64>();
            break;
        }
    }
    println!(
        "one awake sandbox with the real Claude Code (its session open, idle): PSS {:.0} MiB",
        pss as f64 / 1024.0
    );
    let data = huddle.data.clone();
    huddle.stop().await;
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::main]
async fn main() {
    let (_pool, db_url) = common::fresh_db().await;
    let sa = common::start_sandbox_agent(None, None).await;
    let shared = start(&db_url, Some(sa.endpoint()), &[]).await;
    measure(
        "one shared sandbox-agent (before: every workspace's agent in one server)",
        &shared,
        sa.pgid(),
    )
    .await;
    shared.stop().await;
    let (_pool, db_url) = common::fresh_db().await;
    let sandboxed = start(&db_url, None, &[]).await;
    measure("a bubblewrap sandbox per workspace", &sandboxed, None).await;
    capacity(&sandboxed, 100).await;
    let data = sandboxed.data.clone();
    sandboxed.stop().await;
    sa.stop().await;
    let _ = std::fs::remove_dir_all(data);
    claude_memory().await;
}
