//! 200 sleep/wake cycles of one workspace, each with a real agent session and a turn on the real
//! sandbox-agent, in-process so that the runtime's live tasks can be counted. Prints tasks and RSS
//! as the cycles go: both must stay flat (each ACP connection's pump and transport end with it).
//! Run with `scripts/bench.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CYCLES: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::main]
async fn main() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, Duration::from_millis(50)).await;
    let ws = app.create("pi").await;
    let registry = app.state.registry().clone();
    println!("sleep/wake cycles (each: wake, new ACP connection, one turn, sleep)");
    println!("{:>6} {:>8} {:>10}", "cycle", "tasks", "RSS KiB");
    let started = Instant::now();
    let mut samples = Vec::new();
    for cycle in 0..=CYCLES {
        if cycle % 25 == 0 {
            // Let what closed in the last sleep finish closing before counting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (tasks, rss) = (alive_tasks(), rss_kib());
            println!("{cycle:>6} {tasks:>8} {rss:>10}");
            samples.push((tasks, rss));
        }
        if cycle == CYCLES {
            break;
        }
        app.prompt(&ws, "ada", "hello").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
            if info["status"] == "idle" && info["queue"].as_array().is_some_and(|q| q.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "turn did not end: {info}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while registry.awake() > 0 {
            assert!(
                Instant::now() < deadline,
                "the workspace did not fall asleep"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (first_tasks, first_rss) = samples[1];
    let (last_tasks, last_rss) = *samples.last().unwrap();
    println!(
        "{CYCLES} cycles in {:.1} s; from cycle 25 to {CYCLES}: tasks {first_tasks} -> {last_tasks}, RSS {first_rss} -> {last_rss} KiB ({:+} KiB)",
        started.elapsed().as_secs_f64(),
        last_rss as i64 - first_rss as i64
    );
    app.stop().await;
    sa.stop().await;
}
