//! Several Huddle nodes (the real binary) on one Postgres, behind a real load balancer (HAProxy
//! from Debian, started by the test as Postgres is), with their agents on two sandbox hosts. What
//! must hold: any node serves any room, an action sent to any node lands once in the room that
//! runs on one, and a node killed mid-turn loses and doubles nothing for anyone watching.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::lb::Lb;
use crate::common::*;
use crate::process::{Huddle, free_port, log_tail, temp_dir};
use huddle::model::{RoomEntry, RoomEvent};
use serde_json::json;

/// A request to one node (as the load balancer would send it: for the public host name).
async fn post_to(
    node: &str,
    public_host: &str,
    endpoint: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{node}/api/workspace/{endpoint}"))
        .header("host", public_host)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{endpoint} at {node}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// A client of the room through the load balancer that, like a browser's EventSource, reconnects
/// with `Last-Event-ID` whenever its stream ends (its node died): every entry it got, in order.
struct Watcher {
    seen: Arc<Mutex<Vec<RoomEntry>>>,
    reconnects: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(lb: &str, ws: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::<RoomEntry>::new()));
        let reconnects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let url = format!("{lb}/api/workspace/{ws}/events");
        let (into, count) = (seen.clone(), reconnects.clone());
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            let http = anon_client();
            loop {
                let last = into.lock().unwrap().last().map(|e| e.seq).unwrap_or(0);
                let res = http
                    .get(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .header("last-event-id", last.to_string())
                    .send()
                    .await;
                if let Ok(res) = res.and_then(|r| r.error_for_status()) {
                    let mut events =
                        eventsource_stream::Eventsource::eventsource(res.bytes_stream());
                    while let Some(Ok(ev)) = events.next().await {
                        if ev.id.parse::<i64>().is_ok()
                            && let Ok(entry) = serde_json::from_str::<RoomEntry>(&ev.data)
                        {
                            into.lock().unwrap().push(entry);
                        }
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            seen,
            reconnects,
            task,
        }
    }

    fn has(&self, pred: impl Fn(&RoomEntry) -> bool) -> bool {
        self.seen.lock().unwrap().iter().any(pred)
    }

    fn seqs(&self) -> Vec<i64> {
        self.seen.lock().unwrap().iter().map(|e| e.seq).collect()
    }

    /// Panics unless the entries so far are each there once, and the agent's chunks after
    /// `after` are `0 ` … `n-1 `, each once and in order.
    fn assert_chunks(&self, who: usize, after: i64, n: usize) {
        self.assert_each_once(who);
        let chunks: Vec<String> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.seq > after)
            .filter_map(agent_said)
            .collect();
        let expected: Vec<String> = (0..n).map(|i| format!("{i} ")).collect();
        if chunks != expected {
            let at = chunks.iter().zip(&expected).position(|(x, y)| x != y);
            panic!(
                "client {who}: {} chunks, not {n} once each in order (first difference at {at:?})",
                chunks.len()
            );
        }
    }

    /// Panics unless the entries so far are 1, 2, 3, …: each once, none skipped, in order.
    fn assert_each_once(&self, who: usize) {
        let seqs = self.seqs();
        if let Some((i, s)) = seqs.iter().enumerate().find(|(i, s)| **s != *i as i64 + 1) {
            panic!(
                "client {who}: entry {} is seq {s} (around it: {:?})",
                i + 1,
                &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
            );
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until every watcher has seen what `pred` matches.
async fn all_see(watchers: &[Watcher], what: &str, pred: impl Fn(&RoomEntry) -> bool + Copy) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let behind = watchers.iter().filter(|w| !w.has(pred)).count();
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} of {} clients never saw {what}",
            watchers.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every watcher saw the turn of prompt `seq` end; panics unless each saw its `n`
/// chunks once and in order, and the turn ended as the agent ended it (`end_turn`).
async fn all_see_whole_turn(watchers: &[Watcher], what: &str, seq: i64, n: usize) {
    all_see(
        watchers,
        what,
        |e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == seq),
    )
    .await;
    for (i, w) in watchers.iter().enumerate() {
        w.assert_chunks(i, seq, n);
    }
    assert!(
        watchers[0].has(|e| matches!(&e.event, RoomEvent::TurnEnded { prompt_seq, stop_reason: Some(r), .. } if *prompt_seq == seq && r == "end_turn")),
        "{what}: the turn did not go on to its end"
    );
}

/// The node that owns the workspace now (by its address), once a live one does.
async fn owner(pool: &sqlx::PgPool, ws: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT node_url FROM workspace_leases WHERE workspace_id = $1 AND expires_at > now()",
    )
    .bind(ws)
    .fetch_optional(pool)
    .await
    .unwrap()
    .flatten()
}

/// A sandbox host (sandbox-agent with the scripted agent, token `host-token`); its agents keep
/// their state under `dir`, shared by every host of a test.
async fn sandbox_host(
    dir: &std::path::Path,
) -> huddle::sandbox_agent::process::SandboxAgentProcess {
    use huddle::sandbox_agent::process::{ProcessOptions, SandboxAgentProcess};
    let state = dir.join("agent-state");
    std::fs::create_dir_all(&state).unwrap();
    SandboxAgentProcess::start(ProcessOptions {
        bin: Some(sandbox_agent_bin()),
        token: Some("host-token".into()),
        extra_path: vec![fixtures_bin()],
        env: vec![("PI_ACP_STATE".into(), state.display().to_string())],
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Three nodes behind HAProxy, two sandbox hosts, 100 clients spread over the nodes. A prompt sent
/// to each node lands once. A turn streams 2,000 chunks and its owner is killed with SIGKILL in
/// the middle: another node owns the workspace, re-attaches to the agent on its host, and every
/// client sees every chunk once and in order. A permission asked before another owner's kill is
/// answered after it, through the load balancer.
#[tokio::test]
async fn three_nodes_behind_a_load_balancer_lose_and_double_nothing_when_owners_die() {
    let (pool, url) = fresh_db().await;
    let dir = temp_dir("huddle-cluster");
    let mut hosts = Vec::new();
    for _ in 0..2 {
        hosts.push(sandbox_host(&dir).await);
    }
    let host_list = hosts
        .iter()
        .map(|h| format!("{}#host-token", h.endpoint().base_url))
        .collect::<Vec<_>>()
        .join(",");
    let lb_port = free_port();
    let public = format!("127.0.0.1:{lb_port}");
    let public_url = format!("http://{public}");
    let env = [
        ("HUDDLE_SANDBOX", "remote"),
        ("HUDDLE_SANDBOX_HOSTS", host_list.as_str()),
        ("HUDDLE_PUBLIC_URL", public_url.as_str()),
        ("HUDDLE_MAX_STREAMS_PER_PERSON", "10000"),
        ("HUDDLE_MAX_STREAMS_PER_IP", "10000"),
        ("HUDDLE_PROMPTS_PER_MINUTE", "10000"),
    ];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Option<Huddle>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = dir.join(format!("node{i}"));
        nodes.push(Some(Huddle::start_env(&url, &data, *port, &env).await));
    }
    let node_base = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let lb = Lb::start(lb_port, &ports, &dir).await;

    let (status, created) = post_to(&lb.base, &public, "create", json!({"agent": "pi"})).await;
    assert_eq!(status, 200, "{created}");
    let ws = created["workspaceId"].as_str().unwrap().to_string();
    let watchers: Vec<Watcher> = (0..100).map(|_| Watcher::start(&lb.base, &ws)).collect();

    // Presence: Ada, Bob and Carol each stream the room at another node, and every node says
    // all three are online.
    let mut people = Vec::new();
    for name in ["Ada", "Bob", "Carol"] {
        let body = json!({"workspaceId": ws, "name": name, "role": "member"});
        let (status, made) = post_to(&lb.base, &public, "tokens/create", body).await;
        assert_eq!(status, 200, "{made}");
        people.push(made["token"].as_str().unwrap().to_string());
    }
    let mut streams = Vec::new();
    for (i, token) in people.iter().enumerate() {
        let res = anon_client()
            .get(format!("{}/api/workspace/{ws}/events", node_base(i)))
            .header("host", &public)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        streams.push(eventsource_stream::Eventsource::eventsource(
            res.bytes_stream(),
        ));
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ev = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| panic!("node {i} never listed all three online"))
                .unwrap()
                .unwrap();
            if ev.event != "online" {
                continue;
            }
            let online: Vec<huddle::model::Member> = serde_json::from_str(&ev.data).unwrap();
            let names: Vec<&str> = online.iter().map(|m| m.display_name.as_str()).collect();
            if ["Ada", "Bob", "Carol"].iter().all(|n| names.contains(n)) {
                break;
            }
        }
    }
    drop(streams);

    // The sign-in link one node printed works at every node (a browser lands on any of them).
    let link = std::fs::read_to_string(dir.join("node0").join("sign-in-link")).unwrap();
    let secret = link.trim().rsplit('/').next().unwrap().to_string();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in 0..3 {
        for s in [secret.as_str(), "not-the-secret"] {
            let res = no_redirects
                .get(format!("{}/sign-in/{s}", node_base(i)))
                .header("host", &public)
                .send()
                .await
                .unwrap();
            let expected = if s == secret { 303 } else { 403 };
            assert_eq!(res.status().as_u16(), expected, "node {i}, {s}");
        }
    }

    // A prompt sent to each node lands once, in the one room.
    let mut landed = Vec::new();
    for (i, who) in ["ada", "bob", "carol"].iter().enumerate() {
        let body =
            json!({"workspaceId": ws, "userId": who, "displayName": who, "text": "stream 3"});
        let (status, answer) = post_to(&node_base(i), &public, "prompt", body).await;
        assert_eq!(status, 200, "node {i}: {answer}");
        landed.push(answer["seq"].as_i64().unwrap());
    }
    let last = *landed.last().unwrap();
    all_see(
        &watchers,
        "the three turns",
        |e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == last),
    )
    .await;
    let prompts: Vec<i64> = watchers[0]
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::ChatUser { .. }))
        .map(|e| e.seq)
        .collect();
    assert_eq!(prompts, landed, "each prompt once");

    // 2,000 chunks; the owner killed in the middle.
    let body =
        json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada", "text": "pace 2000 200"});
    let (status, answer) = post_to(&lb.base, &public, "prompt", body).await;
    assert_eq!(status, 200, "{answer}");
    let streaming = answer["seq"].as_i64().unwrap();
    all_see(&watchers[..1], "chunk 600", |e| {
        entry_text(e).as_deref() == Some("600 ")
    })
    .await;
    let killed = owner(&pool, &ws).await.expect("an owner");
    let victim = (0..3).find(|i| node_base(*i) == killed).unwrap();
    let mut dead = nodes[victim].take().unwrap();
    dead.child.start_kill().unwrap();
    dead.child.wait().await.unwrap();
    let killed_at = Instant::now();
    let new_owner = loop {
        if let Some(o) = owner(&pool, &ws).await.filter(|o| *o != killed) {
            break o;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no node took the workspace over; the last log:\n{}",
            log_tail(&dead.log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = killed_at.elapsed();
    all_see_whole_turn(&watchers, "the 2,000-chunk turn", streaming, 2000).await;
    let reconnected: usize = watchers
        .iter()
        .map(|w| w.reconnects.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    eprintln!(
        "owner killed at chunk 600: {new_owner} owned the workspace {:.2} s later; 100 clients saw 2,000 chunks each, once and in order ({reconnected} reconnects)",
        failover.as_secs_f64()
    );

    // A question asked before its owner is killed is answered after, through the balancer.
    let body =
        json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada", "text": "permission"});
    let (status, answer) = post_to(&lb.base, &public, "prompt", body).await;
    assert_eq!(status, 200, "{answer}");
    let asking = answer["seq"].as_i64().unwrap();
    all_see(&watchers[..1], "the question", |e| {
        matches!(e.event, RoomEvent::PermissionRequested { .. })
    })
    .await;
    let request_id = watchers[0]
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            RoomEvent::PermissionRequested { request_id, .. } => Some(request_id.clone()),
            _ => None,
        })
        .unwrap();
    let victim = (0..3).find(|i| node_base(*i) == new_owner).unwrap();
    let mut dead2 = nodes[victim].take().unwrap();
    dead2.child.start_kill().unwrap();
    dead2.child.wait().await.unwrap();
    // Answered at once, while no node owns the workspace: the answer waits for the next owner,
    // and there for the agent's connection to be re-attached.
    let body = json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob",
        "requestId": request_id, "optionId": "allow"});
    // The balancer may have sent it on its connection to the node just killed before it saw
    // that close: it answers 502, and the client sends it again (that node answered nothing).
    let mut tries = 0;
    let (status, answer) = loop {
        let (status, answer) = post_to(&lb.base, &public, "permission", body.clone()).await;
        tries += 1;
        if status != 502 || tries == 5 {
            break (status, answer);
        }
    };
    assert_eq!(status, 200, "{answer}");
    all_see(
        &watchers,
        "the answered turn's end",
        |e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == asking),
    )
    .await;
    assert!(
        watchers[0].has(|e| entry_text(e).is_some_and(|t| t.contains("permission: allow"))),
        "the agent got the answer given after the kill"
    );
    for (i, w) in watchers.iter().enumerate() {
        w.assert_each_once(i);
    }
    dead.assert_no_panic();
    dead2.assert_no_panic();

    // The killed nodes come back; then a rolling restart of all three (SIGTERM, each node hands
    // its rooms over and exits; started again) during a 2,000-chunk turn.
    for (i, node) in nodes.iter_mut().enumerate() {
        if node.is_none() {
            let data = dir.join(format!("node{i}"));
            *node = Some(Huddle::start_env(&url, &data, ports[i], &env).await);
        }
    }
    let body =
        json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada", "text": "pace 2000 200"});
    let (status, answer) = post_to(&lb.base, &public, "prompt", body).await;
    assert_eq!(status, 200, "{answer}");
    let rolling = answer["seq"].as_i64().unwrap();
    let mut handed_over = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let from = watchers[0].seen.lock().unwrap().len();
        // Each node goes while the turn streams.
        let deadline = Instant::now() + Duration::from_secs(60);
        while watchers[0].seen.lock().unwrap().len() < from + 100 {
            assert!(
                Instant::now() < deadline,
                "the turn stopped streaming before node {i} went"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let owned = owner(&pool, &ws).await == Some(node_base(i));
        let took = crate::process::stop(node.take().unwrap(), &dir).await;
        handed_over.push((owned, took));
        let data = dir.join(format!("node{i}"));
        *node = Some(Huddle::start_env(&url, &data, ports[i], &env).await);
    }
    all_see_whole_turn(
        &watchers,
        "the turn through a rolling restart",
        rolling,
        2000,
    )
    .await;
    assert!(
        handed_over.iter().any(|(owned, _)| *owned),
        "the owner was among the restarted nodes"
    );
    eprintln!(
        "rolling restart during a 2,000-chunk turn (owner?, stop time): {handed_over:?}; nothing lost or doubled for 100 clients"
    );
    drop(watchers);
    for node in nodes.into_iter().flatten() {
        node.assert_no_panic();
        crate::process::stop(node, &dir).await;
    }
    drop(lb);
    for h in hosts {
        h.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP proxy in front of Postgres that can be cut like a network partition: while cut it
/// forwards nothing either way but keeps every socket open, so what a node sent meanwhile
/// arrives once it heals (as TCP would retransmit it).
struct Partition {
    url: String,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(db_url: &str) -> Self {
        let mut url = url::Url::parse(db_url).unwrap();
        let to = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        url.set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let (open, gate) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((inward, _)) = listener.accept().await {
                let (to, gate) = (to.clone(), gate.clone());
                tokio::spawn(async move {
                    let Ok(outward) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    let (ri, wi) = inward.into_split();
                    let (ro, wo) = outward.into_split();
                    tokio::spawn(Self::pipe(ri, wo, gate.clone()));
                    Self::pipe(ro, wi, gate).await;
                });
            }
        });
        Self {
            url: url.to_string(),
            open,
            task,
        }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut gate: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if gate.wait_for(|open| *open).await.is_err() || to.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When a line of a node's log holding `what` was written (seconds since the epoch).
fn logged_at(log: &std::path::Path, what: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains(what))?;
    // `2026-12-06T22:57:38.313876Z`, after the colour codes.
    let start = line.find("20")?;
    let stamp = &line[start..start + 27];
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let day: Vec<i64> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    let clock: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let (y, m, d) = (day[0] - i64::from(day[1] <= 2), day[1], day[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days as f64 * 86_400.0 + clock[0] * 3_600.0 + clock[1] * 60.0 + clock[2])
}

/// A node cut off from Postgres mid-turn (a partition: its packets held, not refused) lets its
/// workspace go before its lease can expire, and another node takes the workspace over and
/// carries the turn on. Once the partition heals, nothing the cut-off node had in flight lands:
/// the session's record holds every chunk once, in order, and the room goes on.
#[tokio::test]
async fn a_node_cut_off_from_postgres_lets_go_before_another_takes_over() {
    let (pool, url) = fresh_db().await;
    let dir = temp_dir("huddle-partition");
    let host = sandbox_host(&dir).await;
    let hosts = format!("{}#host-token", host.endpoint().base_url);
    let env = [
        ("HUDDLE_SANDBOX", "remote"),
        ("HUDDLE_SANDBOX_HOSTS", hosts.as_str()),
    ];
    let partition = Partition::start(&url).await;
    let a = Huddle::start_env(&partition.url, &dir.join("a"), free_port(), &env).await;
    let b = Huddle::start_env(&url, &dir.join("b"), free_port(), &env).await;

    let (status, created) = a.post("create", json!({"agent": "pi"})).await;
    assert_eq!(status, 200, "{created}");
    let ws = created["workspaceId"].as_str().unwrap().to_string();
    let prompt = |text: &str| json!({"workspaceId": ws, "userId": "ada", "displayName": "Ada", "text": text});
    let (status, answer) = a.post("prompt", prompt("stream 1")).await;
    assert_eq!(status, 200, "{answer}");
    let watcher = Watcher::start(&b.base, &ws);
    all_see(std::slice::from_ref(&watcher), "the first turn", |e| {
        is_turn_end(e)
    })
    .await;
    assert_eq!(owner(&pool, &ws).await, Some(a.base.clone()), "A owns it");

    let (status, answer) = a.post("prompt", prompt("pace 600 100")).await;
    assert_eq!(status, 200, "{answer}");
    let streaming = answer["seq"].as_i64().unwrap();
    all_see(std::slice::from_ref(&watcher), "chunk 100", |e| {
        entry_text(e).as_deref() == Some("100 ")
    })
    .await;
    partition.cut();
    let cut = Instant::now();
    let failover = loop {
        if owner(&pool, &ws).await == Some(b.base.clone()) {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "B never took the workspace over; its log:\n{}",
            log_tail(&b.log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    all_see_whole_turn(
        std::slice::from_ref(&watcher),
        "the turn B carried on",
        streaming,
        600,
    )
    .await;
    let let_go = logged_at(&a.log, "letting the workspace go").unwrap_or_else(|| {
        panic!(
            "A never let the workspace go; its log:\n{}",
            log_tail(&a.log)
        )
    });
    let took = logged_at(&b.log, "took over a workspace").expect("B says it took over");
    assert!(
        let_go < took,
        "A let go {:.3} s after B took over",
        let_go - took
    );

    // The partition heals: what A had in flight lands, or is refused; A serves the room again
    // (its prompt goes to B) and the session's record holds each chunk once, in order.
    partition.heal();
    let (status, answer) = a.post("prompt", prompt("stream 5")).await;
    assert_eq!(status, 200, "{answer}");
    let last = answer["seq"].as_i64().unwrap();
    all_see(
        std::slice::from_ref(&watcher),
        "the turn after the partition",
        |e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == last),
    )
    .await;
    watcher.assert_each_once(0);
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT e.payload_json #>> '{params,update,content,text}' FROM sandbox_agent.events e \
         JOIN threads t ON t.session_id = e.session_id WHERE t.workspace_id = $1 \
         AND e.payload_json #>> '{params,update,sessionUpdate}' = 'agent_message_chunk' \
         ORDER BY e.event_index",
    )
    .bind(&ws)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<String> = std::iter::once("chunk 0 ".to_string())
        .chain((0..600).map(|i| format!("{i} ")))
        .chain((0..5).map(|i| format!("chunk {i} ")))
        .collect();
    if recorded != expected {
        let at = recorded.iter().zip(&expected).position(|(x, y)| x != y);
        panic!(
            "the session holds {} chunks, not {} once each in order (first difference at {at:?})",
            recorded.len(),
            expected.len()
        );
    }
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        !log.contains("refused by the database"),
        "A wrote into the session after B took it over:\n{}",
        log_tail(&a.log)
    );
    eprintln!(
        "cut off mid-turn: B owned the workspace {:.2} s after the cut, A let it go {:.2} s before B said it took over; 600 chunks once each",
        failover.as_secs_f64(),
        took - let_go
    );
    a.assert_no_panic();
    b.assert_no_panic();
    drop(watcher);
    crate::process::stop(a, &dir).await;
    crate::process::stop(b, &dir).await;
    host.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client of the balancer whose connections come from `ip` (any address in 127/8 is this
/// machine), so that each is a client of its own.
fn client_at(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Behind the balancer, the per-address stream limit counts each client at its own address (the
/// one the balancer added last to `X-Forwarded-For`); what a client writes into that header
/// itself changes nothing, and a request that does not come from the balancer is counted at the
/// address it comes from whatever its header says.
#[tokio::test]
async fn behind_the_balancer_each_client_counts_at_its_own_address() {
    let (_pool, url) = fresh_db().await;
    let dir = temp_dir("huddle-forwarded");
    let lb_port = free_port();
    let public = format!("127.0.0.1:{lb_port}");
    let public_url = format!("http://{public}");
    let env = [
        ("HUDDLE_PUBLIC_URL", public_url.as_str()),
        ("HUDDLE_TRUSTED_PROXIES", "127.0.0.1"),
        ("HUDDLE_MAX_STREAMS_PER_IP", "2"),
        ("HUDDLE_MAX_STREAMS_PER_PERSON", "100"),
    ];
    let port = free_port();
    let node = Huddle::start_env(&url, &dir.join("node"), port, &env).await;
    let lb = Lb::start(lb_port, &[port], &dir).await;
    let (status, created) = post_to(&lb.base, &public, "create", json!({"agent": "pi"})).await;
    assert_eq!(status, 200, "{created}");
    let ws = created["workspaceId"].as_str().unwrap().to_string();
    let open = |http: reqwest::Client, base: String, spoof: Option<&'static str>| {
        let url = format!("{base}/api/workspace/{ws}/events");
        let public = public.clone();
        async move {
            let mut req = http
                .get(url)
                .header("host", public)
                .bearer_auth(ADMIN_TOKEN);
            if let Some(ip) = spoof {
                req = req.header("x-forwarded-for", ip);
            }
            req.send().await.unwrap()
        }
    };

    let ada = client_at("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let res = open(ada.clone(), lb.base.clone(), None).await;
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    let third = open(ada.clone(), lb.base.clone(), None).await;
    assert_eq!(third.status(), 429, "two streams per address");
    // Another client of the balancer is not held back by the first one's streams.
    let bob = open(client_at("127.0.0.3"), lb.base.clone(), None).await;
    assert_eq!(
        bob.status(),
        200,
        "a second client counts at its own address"
    );
    held.push(bob);
    // The first client claims another address: the balancer's own entry comes after it.
    let spoofed = open(ada.clone(), lb.base.clone(), Some("10.9.8.7")).await;
    assert_eq!(spoofed.status(), 429, "a client cannot pick its address");
    // Not through the balancer: the header is not believed at all.
    let direct = format!("http://127.0.0.1:{port}");
    let carol = client_at("127.0.0.4");
    for _ in 0..2 {
        let res = open(carol.clone(), direct.clone(), Some("10.1.1.1")).await;
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    let res = open(carol.clone(), direct.clone(), Some("10.2.2.2")).await;
    assert_eq!(
        res.status(),
        429,
        "an address that is not a balancer's counts as itself"
    );
    drop(held);
    node.assert_no_panic();
    crate::process::stop(node, &dir).await;
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}
