//! Benchmarks of workspace actors and the room's SSE fan-out, against the real `huddle` binary in
//! its own process (so its memory can be read), a throw-away Postgres and the real sandbox-agent.
//! Prints its figures. Run with `scripts/bench.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{now_ms, percentile};
use futures::StreamExt;
use huddle::model::{RoomEntry, RoomEvent};
use serde_json::json;

const RATE: u32 = 50;
const SECONDS: u32 = 6;

use common::BenchNode as Server;

impl Server {
    async fn create(&self, agent: &str) -> String {
        self.post("create", json!({"agent": agent})).await["workspaceId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn subscribe(&self, ws: &str, user: &str) -> reqwest::Response {
        // Each client is a person of its own (a bot with a token of its own), so that the room
        // counts them as present.
        let token = self
            .post(
                "tokens/create",
                json!({"workspaceId": ws, "name": user, "role": "member"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let url = format!("{}/api/workspace/{ws}/events", self.base);
        let res = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        res
    }
}

async fn wait_online(server: &Server, ws: &str, n: usize) {
    let t = Instant::now();
    loop {
        let info = server.post("info", json!({"workspaceId": ws})).await;
        if info["online"].as_array().unwrap().len() >= n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "clients did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fan-out: `clients` SSE clients on one workspace while the agent streams at RATE events/s.
async fn fan_out(server: &Server, clients: usize) {
    let ws = server.create("pi").await;
    let latencies = Arc::new(Mutex::new(Vec::<f64>::with_capacity(
        clients * (RATE * SECONDS) as usize,
    )));
    let window = Arc::new(Mutex::new((f64::MAX, 0f64)));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let res = server.subscribe(&ws, &format!("c{c}")).await;
        let (latencies, window) = (latencies.clone(), window.clone());
        tasks.push(tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
            let mut mine = Vec::new();
            while let Some(Ok(ev)) = events.next().await {
                if ev.event != "session.event" && ev.event != "turn.ended" {
                    continue;
                }
                let at = now_ms();
                let entry: RoomEntry = serde_json::from_str(&ev.data).unwrap();
                match entry.event {
                    RoomEvent::SessionEvent(e)
                        if e.payload.pointer("/params/update/sessionUpdate")
                            == Some(&json!("agent_message_chunk")) =>
                    {
                        // createdAt is when Huddle took the envelope from sandbox-agent.
                        mine.push(at - e.created_at as f64);
                        let mut w = window.lock().unwrap();
                        w.0 = w.0.min(at);
                        w.1 = w.1.max(at);
                    }
                    RoomEvent::TurnEnded { .. } => break,
                    _ => {}
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    wait_online(server, &ws, clients).await;
    let rss_before = server.rss_kib();
    let n = RATE * SECONDS;
    server.post("prompt", json!({"workspaceId": ws, "userId": "bench", "displayName": "Bench", "text": format!("pace {n} {RATE}")})).await;
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let (first, last) = *window.lock().unwrap();
    let expected = clients * n as usize;
    println!(
        "fan-out to {clients:>4} clients at {RATE} events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} of {expected} deliveries, {:.0} deliveries/s; server RSS {} MiB",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len(),
        l.len() as f64 / ((last - first) / 1000.0).max(0.001),
        rss_before / 1024,
    );
}

/// Prompt to people: `clients` SSE clients on one workspace of the builtin mock agent; prompts
/// are sent one after another, and each client notes when it gets the prompt's chat message and
/// its turn's end. Latencies are from just before the prompt's POST.
async fn prompt_to_clients(server: &Server, clients: usize, prompts: usize) {
    let ws = server.create("mock").await;
    // A first turn, not measured: the agent's session is open before the figures are taken.
    {
        let res = server.subscribe(&ws, "warm-up").await;
        let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
        server
            .post("prompt", json!({"workspaceId": ws, "text": "warm up"}))
            .await;
        while let Some(Ok(ev)) = events.next().await {
            if ev.event == "turn.ended" {
                break;
            }
        }
    }
    // (prompt number, ms after its POST) for the chat message and for the turn's end.
    type Seen = Arc<Mutex<(Vec<f64>, Vec<f64>)>>;
    let seen: Seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let sent_at = Arc::new(Mutex::new(vec![f64::NAN; prompts]));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let res = server.subscribe(&ws, &format!("p{c}")).await;
        let (seen, sent_at) = (seen.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
            let mut ended = 0;
            let mut prompt_of_turn = std::collections::HashMap::new();
            while let Some(Ok(ev)) = events.next().await {
                if ev.event != "chat.user" && ev.event != "turn.started" && ev.event != "turn.ended"
                {
                    continue;
                }
                let at = now_ms();
                let entry: RoomEntry = serde_json::from_str(&ev.data).unwrap();
                let since = |n: usize| at - sent_at.lock().unwrap()[n];
                match entry.event {
                    RoomEvent::ChatUser { text, .. } => {
                        if let Some(n) = text
                            .strip_prefix("bench ")
                            .and_then(|n| n.parse::<usize>().ok())
                        {
                            prompt_of_turn.insert(entry.seq, n);
                            seen.lock().unwrap().0.push(since(n));
                        }
                    }
                    RoomEvent::TurnEnded { prompt_seq, .. } => {
                        if let Some(&n) = prompt_of_turn.get(&prompt_seq) {
                            seen.lock().unwrap().1.push(since(n));
                            ended += 1;
                            if ended == prompts {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    wait_online(server, &ws, clients).await;
    for n in 0..prompts {
        let before = seen.lock().unwrap().1.len();
        sent_at.lock().unwrap()[n] = now_ms();
        server
            .post(
                "prompt",
                json!({"workspaceId": ws, "text": format!("bench {n}")}),
            )
            .await;
        // The next prompt once every client saw this turn end (one at a time: latency, not load).
        let t = Instant::now();
        while seen.lock().unwrap().1.len() < before + clients {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "a turn did not reach every client"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (mut chat, mut turn) = seen.lock().unwrap().clone();
    chat.sort_by(f64::total_cmp);
    turn.sort_by(f64::total_cmp);
    println!(
        "prompt to {clients} clients ({prompts} prompts, mock agent): chat message p50 {:.1} ms, p99 {:.1} ms; \
         turn's last event p50 {:.1} ms, p99 {:.1} ms",
        percentile(&chat, 0.5),
        percentile(&chat, 0.99),
        percentile(&turn, 0.5),
        percentile(&turn, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let (_pool, db_url) = common::fresh_db().await;
    let sa = common::start_sandbox_agent(None, None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = sa.endpoint().token.clone().unwrap();
    let t = Instant::now();
    let env = [
        ("SANDBOX_AGENT_URL", sa.endpoint().base_url.as_str()),
        ("SANDBOX_AGENT_TOKEN", token.as_str()),
        ("HUDDLE_IDLE_SLEEP_SECS", "2"),
    ];
    let server = Server::start(&db_url, port, &env).await;
    println!(
        "huddle started in {:.0} ms; RSS {} MiB",
        t.elapsed().as_secs_f64() * 1000.0,
        server.rss_kib() / 1024
    );
    // `BENCH_ONLY=prompt` runs the prompt-to-people figures alone (quick, when chasing latency).
    if std::env::var("BENCH_ONLY").as_deref() == Ok("prompt") {
        prompt_to_clients(&server, 100, 50).await;
        sa.stop().await;
        return;
    }

    // Memory per awake and per sleeping workspace, and wake time. RSS does not shrink when memory
    // is freed, so what a sleeping workspace keeps is read as how much a second batch, woken after
    // the first fell asleep, adds on top: nothing, if the first batch gave its memory back.
    let count = 300;
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..2 * count {
        let ws = server.create("mock").await;
        if i < count {
            first.push(ws)
        } else {
            second.push(ws)
        }
    }
    let wake_all = |batch: Vec<String>| {
        let server = &server;
        async move {
            let mut times = Vec::new();
            for ws in &batch {
                let t = Instant::now();
                server.post("info", json!({"workspaceId": ws})).await;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            times
        }
    };
    let rss0 = server.rss_kib();
    let mut created = wake_all(first.clone()).await;
    let rss1 = server.rss_kib();
    tokio::time::sleep(Duration::from_secs(5)).await;
    created.extend(wake_all(second).await);
    let rss2 = server.rss_kib();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resumed = wake_all(first).await;
    created.sort_by(f64::total_cmp);
    println!(
        "memory per awake workspace: {:.1} KiB; kept per sleeping workspace: {:.1} KiB (RSS {} MiB, {count} awake {} MiB, \
         those asleep and {count} more awake {} MiB)",
        (rss1 as f64 - rss0 as f64) / count as f64,
        (rss2 as f64 - rss1 as f64) / count as f64,
        rss0 / 1024,
        rss1 / 1024,
        rss2 / 1024,
    );
    println!(
        "wake time (sleeping workspace -> answered action, session created): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&created, 0.5),
        percentile(&created, 0.99)
    );
    println!(
        "wake time (sleeping workspace -> answered action, session resumed with replay): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&resumed, 0.5),
        percentile(&resumed, 0.99)
    );

    // Memory per idle SSE connection.
    let ws = server.create("mock").await;
    server.post("info", json!({"workspaceId": ws})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let mut idle = Vec::new();
    for c in 0..1000 {
        idle.push(server.subscribe(&ws, &format!("idle{c}")).await);
    }
    wait_online(&server, &ws, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();
    println!(
        "memory per idle SSE connection: {:.1} KiB (RSS {} -> {} MiB for 1000 connections)",
        (after as f64 - before as f64) / 1000.0,
        before / 1024,
        after / 1024
    );
    drop(idle);

    for clients in [1, 100, 1000] {
        fan_out(&server, clients).await;
    }
    // What the issue of fan-out latency measures: a prompt, to 100 people.
    prompt_to_clients(&server, 100, 50).await;

    sa.stop().await;
}
