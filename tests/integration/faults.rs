//! Faults that must not wedge a room, against the real Postgres and the real sandbox-agent: agent
//! output Postgres refuses, bad input, errors that must be JSON, two Huddle processes on one
//! database, and connections abandoned at any moment.

use std::time::{Duration, Instant};

use crate::common::*;
use huddle::model::RoomEvent;
use serde_json::json;

const LONG: Duration = Duration::from_secs(300);

use crate::common::entry_text as chunk;

#[tokio::test]
async fn binary_agent_output_is_kept_losslessly_and_the_room_goes_on() {
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "binary").await;
    let live = sse.until(is_turn_end).await;
    assert!(
        matches!(&live.last().unwrap().event, RoomEvent::TurnEnded { stop_reason: Some(r), .. } if r == "end_turn"),
        "the turn ends normally"
    );
    let big = format!("big:{}:end", "x".repeat(1024 * 1024));
    let texts: Vec<String> = live.iter().filter_map(chunk).collect();
    assert!(
        texts.contains(&"nul:\u{0}:end".to_string()),
        "NUL kept: {:?}",
        texts
            .iter()
            .map(|t| t.chars().take(40).collect::<String>())
            .collect::<Vec<_>>()
    );
    assert!(texts.contains(&big), "1 MB line kept");
    assert!(texts.contains(&"after binary".to_string()));
    // Lone surrogates: the agent's text is shown (U+FFFD for each), its original line kept.
    let lone = live
        .iter()
        .find_map(|e| match &e.event {
            RoomEvent::SessionEvent(ev) if chunk(e).is_some_and(|t| t.starts_with("lone:")) => {
                Some(ev.payload.clone())
            }
            _ => None,
        })
        .expect("the lone-surrogate chunk reaches the room");
    assert_eq!(
        lone.pointer("/params/update/content/text").unwrap(),
        "lone:\u{FFFD}:\u{FFFD}:end"
    );
    assert!(
        lone[huddle::store::jsonb::RAW_TEXT_KEY]
            .as_str()
            .unwrap()
            .contains(r"lone:\ud800:\udc00:end")
    );

    // What Postgres holds reads back the same, NUL and all.
    let stored = huddle::store::room_log::list(
        &pool,
        &first_thread(&pool, &ws).await,
        0,
        i64::MAX,
        i64::MAX,
    )
    .await
    .unwrap();
    let stored_texts: Vec<String> = stored.iter().filter_map(chunk).collect();
    assert_eq!(stored_texts, texts);

    // The room is not wedged: the next prompt runs.
    app.prompt(&ws, "ada", "hello again").await;
    let next = sse.until(is_turn_end).await;
    assert!(
        next.iter()
            .filter_map(chunk)
            .any(|t| t == "You said: hello again")
    );
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_prompt_is_shown_and_in_a_name_is_refused_with_a_reason() {
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    let text = "look: a\u{0}b";
    let seq = app.prompt(&ws, "ada", text).await;
    let got = sse.upto(seq).await;
    assert!(matches!(&got.last().unwrap().event, RoomEvent::ChatUser { text: t, .. } if t == text));
    let stored =
        huddle::store::room_log::list(&pool, &first_thread(&pool, &ws).await, seq - 1, seq, 1)
            .await
            .unwrap();
    assert!(matches!(&stored[0].event, RoomEvent::ChatUser { text: t, .. } if t == text));
    sse.until(is_turn_end).await;

    // Names are kept on the server; one with a NUL is refused (here, a bot's).
    let body = json!({"workspaceId": ws, "name": "B\u{0}b"});
    let (status, body) = app.post_as(ADMIN_TOKEN, "tokens/create", body).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("control characters"),
        "{body}"
    );
    app.stop().await;
    sa.stop().await;
}

async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("not JSON ({status}): {}", &text[..text.len().min(300)]));
    (status, body)
}

fn check(got: (u16, serde_json::Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.len() < 400),
        "{body}"
    );
}

#[tokio::test]
async fn every_error_is_json_with_its_status() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("mock").await;
    let (http, base) = (&app.http, &app.base);
    let unknown = http
        .post(format!("{base}/api/no/such/thing"))
        .json(&json!({}));
    check(send(unknown).await, 404, "not_found");
    let get = http.get(format!("{base}/api/workspace/info"));
    check(send(get).await, 405, "method_not_allowed");
    let broken = http
        .post(format!("{base}/api/workspace/info"))
        .header("content-type", "application/json")
        .body("{nope");
    check(send(broken).await, 400, "bad_request");
    // A huge body is refused as too large (a prompt may be larger, for its images, but not this
    // large); a big bad one is refused without being echoed.
    let huge = "x".repeat(7 * 1024 * 1024);
    let body = json!({"workspaceId": ws, "text": huge});
    let too_large = http
        .post(format!("{base}/api/workspace/prompt"))
        .json(&body);
    check(send(too_large).await, 413, "payload_too_large");
    let big = json!({"workspaceId": ws, "text": "x".repeat(300 * 1024)});
    let too_large = http.post(format!("{base}/api/workspace/typing")).json(&big);
    check(send(too_large).await, 413, "payload_too_large");
    let junk = "y".repeat(100_000);
    let bad = http
        .post(format!("{base}/api/workspace/prompt"))
        .header("content-type", "application/json")
        .body(format!("{{\"workspaceId\": 5, \"junk\": \"{junk}\"}}"));
    let (status, body) = send(bad).await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains(&junk[..1000]));
    // The SSE endpoint too.
    let no_room = http.get(format!("{base}/api/workspace/{}/events", "0".repeat(32)));
    check(send(no_room).await, 404, "not_found");
    let bad_id = http
        .get(format!("{base}/api/workspace/{ws}/events"))
        .header("last-event-id", "soon");
    check(send(bad_id).await, 400, "bad_request");
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn a_last_event_id_beyond_the_head_gets_a_reset_and_the_whole_log() {
    use futures::StreamExt;
    let (_pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "hello").await;
    let head = sse.until(is_turn_end).await.last().unwrap().seq;

    let res = app
        .http
        .get(format!("{}/api/workspace/{ws}/events", app.base))
        .header("last-event-id", (head + 1000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
    let mut names = Vec::new();
    let mut seqs = Vec::new();
    while seqs.last() != Some(&head) {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        if let Ok(seq) = ev.id.parse::<i64>() {
            seqs.push(seq);
        }
        names.push(ev.event);
    }
    assert!(names.contains(&"reset".to_string()), "{names:?}");
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "the whole log again");
    app.stop().await;
    sa.stop().await;
}

/// Two nodes on one database: the one that does not own the workspace carries its callers'
/// actions out at the owner (forwarded) and serves the room's stream by following its log; the
/// workspace never runs on both. Once the owner stops, the other takes it over.
#[tokio::test]
async fn two_nodes_on_one_database_serve_one_room_that_runs_on_one() {
    let (pool, url) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let first = spawn_app(&pool, &sa, LONG).await;
    // The second node: its own pool and registry on the same database.
    let pool2 = huddle::store::connect(&url).await.unwrap();
    let second = spawn_app(&pool2, &sa, LONG).await;
    let ws = first.create("pi").await;
    let mut on_first = first.events(&ws, "ada", None).await;
    let mut on_second = second.events(&ws, "bob", None).await;

    // Bob's prompt reaches the second node: it lands once, in the owner's room.
    let body =
        json!({"workspaceId": ws, "userId": "bob", "displayName": "Bob", "text": "stream 5"});
    let (status, answer) = second.post("prompt", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let bobs = answer["seq"].as_i64().unwrap();
    first.prompt(&ws, "ada", "stream 5").await;
    let ends = |e: &huddle::model::RoomEntry| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq > bobs);
    let seen_first: Vec<i64> = on_first.until(ends).await.iter().map(|e| e.seq).collect();
    let seen_second: Vec<i64> = on_second.until(ends).await.iter().map(|e| e.seq).collect();
    assert_eq!(
        seen_second, seen_first,
        "both nodes stream the same entries"
    );
    let head = *seen_first.last().unwrap();
    assert_eq!(
        seen_first,
        (1..=head).collect::<Vec<_>>(),
        "each once, in order"
    );
    // A stream that resumes on the other node with Last-Event-ID goes on exactly.
    let mut resumed = second.events(&ws, "bob", Some(head - 3)).await;
    let again: Vec<i64> = resumed
        .until(|e| e.seq == head)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(again, vec![head - 2, head - 1, head]);
    drop(resumed);

    // Once the owner is gone (it released the lease), the other node takes over; its stream
    // goes on.
    drop(on_first);
    first.stop().await;
    let (status, err) = second.post("prompt", body).await;
    assert_eq!(status, 200, "{err}");
    let next = err["seq"].as_i64().unwrap();
    let rest = on_second
        .until(|e| matches!(e.event, RoomEvent::TurnEnded { prompt_seq, .. } if prompt_seq == next))
        .await;
    assert_eq!(rest.first().unwrap().seq, head + 1, "nothing skipped");
    let entries = huddle::store::room_log::list(
        &pool,
        &first_thread(&pool, &ws).await,
        0,
        i64::MAX,
        i64::MAX,
    )
    .await
    .unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let sessions: (i64,) = sqlx::query_as("SELECT count(*) FROM sandbox_agent.sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions.0, 1, "one session");
    drop(on_second);
    second.stop().await;
    sa.stop().await;
}

/// A workspace deleted at a node that does not own it stops at its owner: the owner's room
/// closes, its agent ends, and the workspace is gone at every node.
#[tokio::test]
async fn a_workspace_deleted_at_another_node_stops_at_its_owner() {
    let (pool, url) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let first = spawn_app(&pool, &sa, LONG).await;
    let pool2 = huddle::store::connect(&url).await.unwrap();
    let second = spawn_app(&pool2, &sa, LONG).await;
    let host = client(&sa, &pool);
    let before = host.list_connections().await.unwrap().len();
    let ws = first.create("pi").await;
    let mut on_first = first.events(&ws, "ada", None).await;
    first.prompt(&ws, "ada", "stream 2").await;
    on_first.until(is_turn_end).await;
    assert_eq!(
        host.list_connections().await.unwrap().len(),
        before + 1,
        "the owner's agent runs"
    );

    let (status, body) = second.post("delete", json!({"workspaceId": ws})).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(Duration::from_secs(30), on_first.closed())
        .await
        .expect("the owner's room closes");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while host.list_connections().await.unwrap().len() > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted workspace's agent still runs at its owner"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for app in [&first, &second] {
        let (status, body) = app.post("info", json!({"workspaceId": ws})).await;
        assert_eq!(status, 404, "{body}");
    }
    first.stop().await;
    second.stop().await;
    sa.stop().await;
}

/// Two nodes on one database, and a workspace the first owns (a turn done there), once the first
/// knows the second is alive: it would let its workspaces go if it could not reach Postgres.
struct TwoNodes {
    pool: sqlx::PgPool,
    /// The first node's own pool.
    first_pool: sqlx::PgPool,
    first: TestApp,
    second: TestApp,
    sa: huddle::sandbox_agent::process::SandboxAgentProcess,
    ws: String,
    events: Sse,
}

impl TwoNodes {
    async fn start() -> Self {
        let (pool, url) = fresh_db().await;
        let sa = start_sandbox_agent(None, None).await;
        let first_pool = huddle::store::connect(&url).await.unwrap();
        let first = spawn_app(&first_pool, &sa, LONG).await;
        let pool2 = huddle::store::connect(&url).await.unwrap();
        let second = spawn_app(&pool2, &sa, LONG).await;
        let ws = first.create("pi").await;
        let mut events = first.events(&ws, "ada", None).await;
        first.prompt(&ws, "ada", "stream 2").await;
        events.until(is_turn_end).await;
        while !first.state.nodes().others_alive() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        TwoNodes {
            pool,
            first_pool,
            first,
            second,
            sa,
            ws,
            events,
        }
    }

    /// Who holds the workspace's lease, in which epoch, and whether it is still live.
    async fn lease(&self) -> (String, i64, bool) {
        sqlx::query_as(
            "SELECT owner, epoch, expires_at > now() FROM workspace_leases WHERE workspace_id = $1",
        )
        .bind(&self.ws)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// A prompt to the first node, and whether the agent said anything before its turn ended.
    async fn answered(&mut self) -> bool {
        self.first.prompt(&self.ws, "ada", "stream 2").await;
        let mut said = false;
        loop {
            let e = self.events.next().await;
            if is_turn_end(&e) {
                return said;
            }
            said |= agent_said(&e).is_some();
        }
    }

    async fn stop(self) {
        self.first.stop().await;
        self.second.stop().await;
        self.sa.stop().await;
    }
}

/// A node so busy that requests hold every connection of its pool (a burst of clients, slow
/// queries) still renews its leases and answers its health check: it keeps its workspaces, no
/// other node takes one over, and its room goes on once the burst is over.
#[tokio::test]
async fn a_node_whose_pool_is_taken_keeps_its_workspaces() {
    let mut nodes = TwoNodes::start().await;
    let before = nodes.lease().await;

    // Every connection of the first node's pool taken (one listens for other nodes' entries for
    // good), for twice as long as a lease lasts.
    let mut held = Vec::new();
    while let Ok(conn) = nodes.first_pool.acquire().await {
        held.push(conn);
    }
    assert!(held.len() >= 15, "took {} connections", held.len());
    let health = nodes
        .first
        .anon
        .get(format!("{}/healthz", nodes.first.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        health, 200,
        "busy, not down: the balancer keeps sending it clients"
    );
    tokio::time::sleep(huddle::store::leases::LEASE_TTL * 2).await;
    let after = nodes.lease().await;
    drop(held);

    assert_eq!(after, before, "the same owner, in the same epoch, renewed");
    assert!(nodes.answered().await, "the agent answered after the burst");
    nodes.stop().await;
}

/// A write of the owner's that hangs in Postgres (a commit stuck behind a lock, a machine out
/// of CPU) holds its lease row as long as it runs: the owner still extends its lease meanwhile,
/// keeps its workspace, and no other node takes it over.
#[tokio::test]
async fn a_slow_write_does_not_cost_the_owner_its_lease() {
    let mut nodes = TwoNodes::start().await;
    let before = nodes.lease().await;

    // A write's transaction as the owner's room runs one: the lease checked, then it hangs for
    // twice as long as a lease lasts.
    let mut write = nodes.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *write)
        .await
        .unwrap();
    let held = huddle::store::leases::Held {
        owner: before.0.clone(),
        epoch: before.1,
    };
    huddle::store::leases::fence(&mut write, &nodes.ws, &held)
        .await
        .unwrap();
    tokio::time::sleep(huddle::store::leases::LEASE_TTL * 2).await;
    assert_eq!(
        nodes.lease().await,
        before,
        "the same owner, in the same epoch, renewed while its write hung"
    );
    write.rollback().await.unwrap();

    assert!(
        nodes.answered().await,
        "the agent answered after the slow write"
    );
    nodes.stop().await;
}

#[tokio::test]
async fn abandoned_connections_leave_no_ghosts_and_the_room_sleeps() {
    use rand::Rng;
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, Duration::from_secs(1)).await;
    let ws = app.create("mock").await;
    let head_before = huddle::store::room_log::head(&pool, &first_thread(&pool, &ws).await)
        .await
        .unwrap();
    // 2,000 SSE requests, with and without an identity, each dropped at a random moment: before the
    // room answers, before the headers arrive, or after some of the stream.
    let mut tasks = Vec::new();
    for i in 0..2000 {
        // Half without an identity (refused at once), half as one of 200 bots with tokens.
        let req = if i % 2 == 0 {
            app.anon
                .get(format!("{}/api/workspace/{ws}/events", app.base))
        } else {
            app.events_request(&ws, &format!("u{}", i % 200)).await
        };
        let wait = rand::rng().random_range(0..1500u64);
        tasks.push(tokio::spawn(async move {
            let request = async {
                let res = req.send().await?;
                let mut stream = res.bytes_stream();
                use futures::StreamExt;
                while stream.next().await.is_some() {}
                Ok::<_, reqwest::Error>(())
            };
            let _ = tokio::time::timeout(Duration::from_millis(wait), request).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Nobody is left: the room falls asleep, and nobody shows as online when it wakes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.registry().awake() > 0 {
        assert!(Instant::now() < deadline, "the room did not fall asleep");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(status, 200);
    assert_eq!(info["online"], json!([]), "no ghosts");
    // Anonymous connections wrote nothing; each named person at most "joined" and "left".
    let entries = huddle::store::room_log::list(
        &pool,
        &first_thread(&pool, &ws).await,
        head_before,
        i64::MAX,
        i64::MAX,
    )
    .await
    .unwrap();
    let joined = entries
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::Presence { online: true, .. }))
        .count();
    let left = entries
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::Presence { online: false, .. }))
        .count();
    assert!(
        joined > 0,
        "some connections got in before they were dropped"
    );
    assert_eq!(joined, left, "everyone who joined left");
    // Besides presence, only the agent's session, opened for the room's first person.
    let others: Vec<_> = entries
        .iter()
        .filter(|e| {
            !matches!(
                e.event,
                RoomEvent::Presence { .. } | RoomEvent::SessionEvent(_)
            )
        })
        .collect();
    assert!(
        others.is_empty(),
        "nothing but presence and the session's opening: {others:?}"
    );
    assert!(joined <= 1000);
    eprintln!("2,000 abandoned connections: {joined} joined, {left} left, 0 online after");
    app.stop().await;
    sa.stop().await;
}

/// A huge or hostile value is quoted in an error by a short prefix only, wherever it is sent; and
/// a Last-Event-ID that is not text is refused, not taken for none (which would replay it all).
#[tokio::test]
async fn errors_quote_at_most_a_short_prefix_of_what_was_sent() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let (http, base) = (&app.http, &app.base);
    let long = "w".repeat(10_000);
    let echoed = |body: &str| body.contains(&"w".repeat(100));
    for endpoint in [
        "info",
        "snapshot",
        "get",
        "page",
        "members",
        "prompt",
        "cancel",
        "permission",
        "typing",
    ] {
        let res = http
            .post(format!("{base}/api/workspace/{endpoint}"))
            .json(&json!({"workspaceId": long, "text": "hi", "requestId": "r", "optionId": "o"}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert!((400..500).contains(&status), "{endpoint}: {status}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(!echoed(&body) && body.len() < 400, "{endpoint}: {body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{endpoint}"
        );
    }
    for path in [
        format!("/api/workspace/{long}/events"),
        format!("/api/workspace/{long}/images/x"),
        format!("/w/{long}"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert!((400..500).contains(&status), "{status}");
        assert!(
            !echoed(&body),
            "{}: {}",
            &path[..20],
            &body[..body.len().min(300)]
        );
    }
    // Markdown is rendered for people with an identity only.
    let res = app
        .anon
        .post(format!("{base}/api/markdown"))
        .json(&json!({"text": "# hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // A permission answer naming a request or option that is not there.
    let token_body =
        json!({"workspaceId": ws, "userId": "ada", "requestId": long, "optionId": long});
    let (status, body) = app.post("permission", token_body).await;
    assert!(
        (400..500).contains(&status) && !echoed(&body.to_string()),
        "{body}"
    );
    // Last-Event-ID: not a number, or not even text.
    let token = app.token_named(&ws, "ada", "Ada").await;
    for value in [
        reqwest::header::HeaderValue::from_static("banana"),
        reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    ] {
        let res = app
            .anon
            .get(format!("{base}/api/workspace/{ws}/events"))
            .bearer_auth(&token)
            .header("last-event-id", value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400);
        let error: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error["code"], "bad_request");
    }
    // What hyper refuses before any handler (a 100 KB URL, a request line that is not HTTP, a
    // head over its buffer) is answered with a body that says why, too.
    let addr = base.trim_start_matches("http://").to_string();
    let raw = |request: Vec<u8>| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
            // The server may answer (and close) before it has read all of it.
            let _ = conn.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(READ_TIMEOUT, conn.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let huge_url = format!(
        "GET /w/{} HTTP/1.1\r\nhost: {addr}\r\n\r\n",
        "u".repeat(100_000)
    );
    let huge_head = format!(
        "GET / HTTP/1.1\r\nhost: {addr}\r\nx-big: {}\r\n\r\n",
        "h".repeat(500_000)
    );
    for (request, status) in [
        (huge_url.into_bytes(), "414"),
        (b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(), "400"),
        (huge_head.into_bytes(), "431"),
    ] {
        let answer = raw(request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        let error: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: a JSON body ({e}): {head}\n{body}"));
        assert_eq!(error["code"], "bad_request", "{body}");
        assert!(!echoed(body), "{body}");
    }
    app.stop().await;
    sa.stop().await;
}

/// Streams catching up from Postgres cannot take every connection of the pool: with their reads
/// held (the room log locked), 30 streams that must read it wait for at most half the pool, and a
/// request that needs the database still gets an answer. Before, the streams took all 16
/// connections, everything else waited 1.5 s for one and was told the service is unavailable (ten
/// thousand streams that fell behind at once did this to the rooms' own writes).
#[tokio::test]
async fn streams_catching_up_leave_the_pool_to_everything_else() {
    const STREAMS: usize = 30;
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "pace 3 100").await;
    sse.until(is_turn_end).await;
    let head = huddle::store::room_log::head(&pool, &first_thread(&pool, &ws).await)
        .await
        .unwrap();
    let people: Vec<String> = (0..STREAMS).map(|i| format!("p{i}")).collect();
    for person in &people {
        app.token(&ws, person).await;
    }
    // Held: every read of the room log waits from here.
    let mut lock = pool.begin().await.unwrap();
    for sql in [
        "SET LOCAL idle_in_transaction_session_timeout = 0",
        "LOCK TABLE room_log IN ACCESS EXCLUSIVE MODE",
    ] {
        sqlx::query(sql).execute(&mut *lock).await.unwrap();
    }
    let mut streams = Vec::new();
    for person in &people {
        streams.push(app.events(&ws, person, None).await);
    }
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT seq, created_at, kind, data FROM room_log%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    while waiting().await < 8 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = app.post("members", json!({"workspaceId": ws})).await;
    assert_eq!(status, 200, "a request beside the streams: {body}");
    assert_eq!(waiting().await, 8, "reads of streams catching up at once");
    lock.commit().await.unwrap();
    // Each stream then catches up to the head, with nothing lost.
    for mut stream in streams {
        let seen = stream.until(|e| e.seq >= head).await;
        let seqs: Vec<i64> = seen.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    }
    app.stop().await;
    sa.stop().await;
}

/// Each connection is served in the version its first bytes say, however they arrive: HTTP/2
/// from its first byte (as the balancer speaks to a node), HTTP/1.1 sent whole, and HTTP/1.1 whose
/// first byte comes alone (it could still be the start of HTTP/2's preface: the server reads on).
/// A connection that closes before it says anything leaves the server serving; one that is still
/// silent when Huddle stops is closed with the rest.
#[tokio::test]
async fn connections_are_served_in_the_version_they_speak_however_their_bytes_arrive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    drop(tokio::net::TcpStream::connect(&addr).await.unwrap());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [
        (h2, reqwest::Version::HTTP_2),
        (app.anon.clone(), reqwest::Version::HTTP_11),
    ] {
        let res = client
            .get(format!("{}/favicon.svg", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!((res.version(), res.status().as_u16()), (version, 200));
    }
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    conn.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest = format!(
        "OST /api/workspace/info HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READ_TIMEOUT, conn.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    let error: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(error["code"].is_string(), "{body}");
    // One that has said nothing when Huddle stops is closed with the rest (not kept until it
    // would have timed out, 30 s on).
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    app.stop().await;
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut [0u8; 1])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "still open: {read:?}");
    sa.stop().await;
}

/// The crash boundary: what the agent sent is persisted with its session first, then logged in
/// the room. A run that stops between the two (kill -9) leaves an event the room never showed,
/// and the resumed stream starts after it. The next run logs it, once, in order.
#[tokio::test]
async fn an_event_persisted_but_not_logged_when_huddle_stopped_is_logged_once_at_wake() {
    use huddle::sandbox_agent::{PostgresPersist, SessionEvent, SessionPersistDriver};
    let (pool, sa, app, ws, mut sse) = pi_room(LONG).await;
    app.prompt(&ws, "ada", "stream 3").await;
    sse.until(is_turn_end).await;
    drop(sse);
    app.stop().await;
    // As the agent's connection pump does before the room hears of it: persisted, not logged.
    let persist = PostgresPersist::new(pool.clone());
    let session = huddle::room::first_session_id(&ws);
    let index = persist.max_event_index(&session).await.unwrap().unwrap() + 1;
    let lost = SessionEvent {
        id: format!("lost-{index}"),
        event_index: index,
        session_id: session.clone(),
        created_at: huddle::sandbox_agent::now_ms(),
        connection_id: "c".into(),
        sender: huddle::sandbox_agent::Sender::Agent,
        payload: json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s",
            "update": {"sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": "the chunk at the crash"}}}}),
    };
    persist.insert_event(&lost).await.unwrap();
    for _ in 0..2 {
        let app = spawn_app(&pool, &sa, LONG).await;
        let (status, _) = app.post("info", json!({"workspaceId": ws})).await;
        assert_eq!(status, 200);
        let t = Instant::now();
        while !logged_event_indexes(&pool, &ws).await.contains(&index) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the lost event was logged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
    // Every event of the session is in the room log, once, in order.
    let indexes = logged_event_indexes(&pool, &ws).await;
    let all: Vec<i64> = (1..=index).collect();
    assert_eq!(indexes, all);
    sa.stop().await;
}

/// sandbox-agent killed with SIGKILL at 50 moments of streaming turns (as soon as the prompt is
/// taken, or after its 1st to 9th chunk), restarted each time: the room's next prompt opens a new
/// connection while the dead one's last envelopes may still be being recorded. No event index is
/// given twice, and every event the room shows is one its session holds.
#[tokio::test]
async fn sandbox_agent_killed_mid_turn_leaves_no_event_index_twice() {
    use huddle::sandbox_agent::SessionPersistDriver;
    use huddle::sandbox_agent::process::{ProcessOptions, SandboxAgentProcess};
    let (pool, _) = fresh_db().await;
    let mut sa = start_sandbox_agent(None, None).await;
    let (port, token) = (sa.port(), sa.endpoint().token.clone());
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    const KILLS: usize = 50;
    for kill in 0..KILLS {
        app.prompt(&ws, "ada", "slow").await;
        if kill % 10 > 0 {
            let after = format!("working {} ", kill % 10 - 1);
            sse.until(|e| chunk(e).is_some_and(|t| t.starts_with(&after)))
                .await;
        }
        sa.kill().await;
        sa = SandboxAgentProcess::start(ProcessOptions {
            bin: Some(sandbox_agent_bin()),
            port: Some(port),
            token: token.clone(),
            extra_path: vec![fixtures_bin()],
            ..Default::default()
        })
        .await
        .unwrap();
        sse.until(is_turn_end).await;
    }
    app.prompt(&ws, "ada", "echo").await;
    sse.until(is_turn_end).await;
    let logged = logged_event_indexes(&pool, &ws).await;
    let mut unique = logged.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        logged.len(),
        "an event index given twice: {logged:?}"
    );
    let persist = huddle::sandbox_agent::PostgresPersist::new(pool.clone());
    let mut held = std::collections::HashSet::new();
    let mut cursor = None;
    loop {
        let page = persist
            .list_events(
                &huddle::room::first_session_id(&ws),
                cursor.as_deref(),
                1000,
            )
            .await
            .unwrap();
        held.extend(page.items.iter().map(|e| e.event_index));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let missing: Vec<i64> = logged
        .iter()
        .copied()
        .filter(|i| !held.contains(i))
        .collect();
    assert!(
        missing.is_empty(),
        "shown but not held by the session: {missing:?}"
    );
    eprintln!(
        "{KILLS} sandbox-agent kills: {} events shown, {} held by the session; 0 indexes twice, 0 shown but not held",
        logged.len(),
        held.len()
    );
    drop(sse);
    app.stop().await;
    sa.stop().await;
}

/// The event indexes of the agent's session events in the room log, in log order.
async fn logged_event_indexes(pool: &sqlx::PgPool, ws: &str) -> Vec<i64> {
    huddle::store::room_log::list(pool, &first_thread(pool, ws).await, 0, i64::MAX, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            RoomEvent::SessionEvent(ev) => Some(ev.event_index),
            _ => None,
        })
        .collect()
}
