//! Cross-site protection and security headers, against the real server (in-process, on a real
//! Postgres and the real sandbox-agent): what a page on another site, or a rebinding DNS name, can
//! get from a Huddle on localhost.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

async fn app() -> (TestApp, huddle::sandbox_agent::process::SandboxAgentProcess) {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    (spawn_app(&pool, &sa, Duration::from_secs(300)).await, sa)
}

async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn other_sites_cannot_drive_huddle() {
    let (app, sa) = app().await;
    let (http, base) = (&app.http, &app.base);
    let create = format!("{base}/api/workspace/create");
    let evil = "http://evil.example";

    // The "simple" requests a page elsewhere can send without a preflight.
    let text_plain = http
        .post(&create)
        .header("origin", evil)
        .header("content-type", "text/plain")
        .body("{}");
    let (status, body) = send(text_plain).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let form = http
        .post(format!("{base}/new"))
        .header("origin", evil)
        .form(&[("agent", "mock")]);
    assert_eq!(send(form).await.0, 403);
    let json_foreign = http.post(&create).header("origin", evil).json(&json!({}));
    assert_eq!(send(json_foreign).await.0, 403);
    let fetch_site = http
        .post(&create)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}));
    assert_eq!(send(fetch_site).await.0, 403);
    let null_origin = http.post(&create).header("origin", "null").json(&json!({}));
    assert_eq!(send(null_origin).await.0, 403);
    let evil_but_same_site_claim = http
        .post(&create)
        .header("origin", evil)
        .header("sec-fetch-site", "same-site")
        .json(&json!({}));
    assert_eq!(send(evil_but_same_site_claim).await.0, 403);
    // Our host name under another scheme is another origin (a page on https://127.0.0.1:port).
    let other_scheme = base.replacen("http://", "https://", 1);
    let (status, body) = send(
        http.post(&create)
            .header("origin", &other_scheme)
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let ours = http
        .post(&create)
        .header("origin", base.as_str())
        .json(&json!({}));
    assert_eq!(send(ours).await.0, 200, "our own origin is ours");
    // Two Host headers, ours first: which one a proxy in front believed is unknown, so no.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let authority = base.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(authority).await.unwrap();
        let request = format!(
            "POST /api/workspace/create HTTP/1.1\r\nHost: {authority}\r\nHost: evil.example\r\n\
             Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    // A same-origin form without its CSRF token is refused too (the signed-in flow with the
    // token is in tests/identity.rs).
    let own_form = http
        .post(format!("{base}/new"))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("agent", "mock"), ("csrf", "guessed")]);
    assert_eq!(send(own_form).await.0, 403);
    // Our own pages and scripts are served.
    let own = http
        .post(&create)
        .header("origin", base)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}));
    let (status, created) = send(own).await;
    assert_eq!(status, 200, "{created}");
    let ws = created["workspaceId"].as_str().unwrap();
    let script = http.post(&create).json(&json!({}));
    assert_eq!(send(script).await.0, 200);
    // The API takes JSON only, even from the same origin.
    let same_text = http
        .post(format!("{base}/api/workspace/prompt"))
        .header("content-type", "text/plain")
        .body(
            json!({"workspaceId": ws, "userId": "a", "displayName": "A", "text": "hi"}).to_string(),
        );
    let (status, body) = send(same_text).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    // DNS rebinding: a foreign host name pointed at 127.0.0.1 gets nothing, not even a page
    // (the health check, which load balancers ask at a node's own address, says only "ok").
    let health = http
        .get(format!("{base}/healthz"))
        .header("host", "rebind.evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    // Nodes' internal calls need the cluster secret: a forged one does nothing.
    let forged = json!({"workspaceId": ws, "threadId": "t", "action": {"action": "prompt",
        "member": {"userId": "operator", "displayName": "Mallory"}, "text": "rm -rf /",
        "teamOnly": false, "images": [], "mentions": []}});
    for secret in [None, Some("guess")] {
        let mut req = http
            .post(format!("{base}/internal/room"))
            .header("host", "rebind.evil.example")
            .json(&forged);
        if let Some(s) = secret {
            req = req.header("x-huddle-node-secret", s);
        }
        let (status, body) = send(req).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }
    for path in ["/", &format!("/w/{ws}")] {
        let res = http
            .get(format!("{base}{path}"))
            .header("host", "rebind.evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }
    let rebound = http
        .post(&create)
        .header("host", "rebind.evil.example")
        .json(&json!({}));
    assert_eq!(send(rebound).await.0, 403);
    app.stop().await;
    sa.stop().await;
}

/// HTTP/2 (what a balancer that speaks h2 to Huddle sends) names the host in `:authority`, with
/// no Host header: answered for our host names, refused for any other (DNS rebinding).
#[tokio::test]
async fn http2_is_answered_for_our_host_names_only() {
    let (app, sa) = app().await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("rebound.example", addr)
        .build()
        .unwrap();
    let res = h2
        .post(format!("{}/api/workspace/create", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"agent": "pi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = h2
        .post(format!(
            "http://rebound.example:{}/api/workspace/create",
            addr.port()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"agent": "pi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "another host name is refused over HTTP/2 too"
    );
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn pages_and_api_answers_carry_security_headers() {
    let (app, sa) = app().await;
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains("img-src 'self' data:"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The page's scripts carry this response's nonce.
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a nonce");
    assert!(html.contains(&format!("nonce=\"{nonce}\"")));
    let api = app
        .http
        .post(format!("{}/api/agents", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    assert!(
        api.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    app.stop().await;
    sa.stop().await;
}

/// Static files served while pages render must leave the pages' own headers alone. Leptos
/// leaves the owner of the last page it started rendering as the thread's current one, and its
/// static file handler took that page's response headers (its policy with the nonce) for the
/// file: the page then went out under the policy that lets nothing run, and never hydrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_their_policy_while_static_files_are_served_beside_them() {
    use futures::StreamExt;
    let (app, sa) = app().await;
    let (_, created) = app.post("create", json!({"agent": "pi"})).await;
    let page = format!(
        "{}/w/{}",
        app.base,
        created["workspaceId"].as_str().unwrap()
    );
    let file = format!("{}/favicon.svg", app.base);
    let loads = futures::stream::iter(0..400)
        .map(|i| {
            let is_page = i % 2 == 0;
            let url = if is_page { page.clone() } else { file.clone() };
            let http = app.http.clone();
            async move {
                let res = http.get(url).send().await.unwrap();
                let csp = res.headers()["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let status = res.status().as_u16();
                res.bytes().await.unwrap();
                (is_page, status, csp)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut wrong = Vec::new();
    for (is_page, status, csp) in &loads {
        assert_eq!(*status, 200);
        if *is_page != csp.contains("'nonce-") {
            wrong.push((*is_page, csp.clone()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 400 answers with the other's policy: {:?}",
        wrong.len(),
        wrong.first()
    );
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn the_agent_works_in_the_workspace_directory() {
    let (app, sa) = app().await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "write file").await;
    let turn = sse.until(is_turn_end).await;
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    let dir = std::path::PathBuf::from(info["workingDir"].as_str().unwrap());
    assert!(
        dir.ends_with(&ws),
        "a directory of its own: {}",
        dir.display()
    );
    let said = turn
        .iter()
        .filter_map(entry_text)
        .collect::<Vec<_>>()
        .join(" ");
    let written = dir.join("hello.txt");
    assert!(said.contains(&written.display().to_string()), "{said}");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "written by the agent\n"
    );
    let huddle_cwd = std::env::current_dir().unwrap().join("hello.txt");
    assert!(
        !huddle_cwd.exists(),
        "nothing lands in Huddle's own directory"
    );
    app.stop().await;
    sa.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn floods_hit_clear_limits_and_stop_can_clear_the_queue() {
    let (pool, url) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let limits = huddle::limits::Limits {
        prompts_per_minute: 6,
        max_queue: 2,
        max_streams_per_ip: 3,
        max_streams_per_person: 2,
    };
    let app = spawn_app_with_limits(&pool, &sa, Duration::from_secs(300), limits.clone()).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    let prompt = |user: &str, text: &str| json!({"workspaceId": ws, "userId": user, "displayName": user, "text": text});

    // A full queue: the third prompt waiting behind a running turn is refused, clearly.
    app.prompt(&ws, "ada", "slow").await;
    sse.until(|e| matches!(e.event, huddle::model::RoomEvent::TurnStarted { .. }))
        .await;
    let mut queued = Vec::new();
    for text in ["one", "two"] {
        queued.push(app.prompt(&ws, "bob", text).await);
    }
    let (status, body) = app.post("prompt", prompt("bob", "three")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("queue_full")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("queue is full"));

    // Stop and clear: the turn stops, and the waiting prompts never run.
    let body =
        json!({"workspaceId": ws, "userId": "carol", "displayName": "Carol", "clearQueue": true});
    let (status, _) = app.post("cancel", body).await;
    assert_eq!(status, 200);
    let rest = sse.until(is_turn_end).await;
    assert!(rest.iter().any(|e| matches!(&e.event,
        huddle::model::RoomEvent::QueueCleared { prompt_seqs, display_name, .. }
            if *prompt_seqs == queued && display_name == "Carol")));
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(info["queue"], json!([]));
    assert_ne!(
        info["status"], "working",
        "nothing runs after the stopped turn"
    );

    // A prompt flood from one person: stopped at the per-minute limit, with how long to wait.
    // (bob has sent 2 prompts and had 1 refused above: 3 of 6 used.)
    let mut refused = None;
    for i in 0..10 {
        let (status, body) = app
            .post("prompt", prompt("bob", &format!("echo {i}")))
            .await;
        if status == 429 && body["code"] == "rate_limited" {
            refused = Some((i, body));
            break;
        }
    }
    let (at, body) = refused.expect("the flood is stopped");
    assert!(at <= 3, "refused after {at} more prompts");
    assert!(
        body["message"].as_str().unwrap().contains("try again in"),
        "{body}"
    );
    // Others are not held back by bob's flood.
    let (_, body) = app.post("prompt", prompt("dan", "echo hi")).await;
    assert_ne!(body["code"], "rate_limited", "{body}");

    // Live streams per person and per address.
    let stream = |user: &'static str| {
        let app = &app;
        let ws = ws.clone();
        async move { app.events_request(&ws, user).await.send().await.unwrap() }
    };
    let second_ada = stream("ada").await;
    assert_eq!(second_ada.status(), 200);
    let third_ada = stream("ada").await;
    assert_eq!(third_ada.status(), 429, "two streams per person");
    let erin = stream("erin").await;
    assert_eq!(erin.status(), 200, "the third stream from this address");
    let frank = stream("frank").await;
    assert_eq!(frank.status(), 429, "three streams per address");

    // A second node on the same database, behind the same balancer: the limits hold across both.
    let pool2 = huddle::store::connect(&url).await.unwrap();
    let other = spawn_app_with_limits(&pool2, &sa, Duration::from_secs(300), limits).await;
    let (status, body) = other
        .post_as(
            &app.token(&ws, "bob").await,
            "prompt",
            prompt("bob", "echo there"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "bob's flood counts at the other node too: {body}"
    );
    let at_other = |user: &'static str| {
        let (app, other, ws) = (&app, &other, ws.clone());
        async move {
            let token = app.token(&ws, user).await;
            other
                .anon
                .get(format!("{}/api/workspace/{ws}/events", other.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // The streams open at the first node are written for the others soon after they open; a
    // node that cannot read the others' counts in time (a busy machine) holds its own limit only,
    // and the client tries again.
    let refused_at_other = |user: &'static str, why: &'static str| {
        let at_other = &at_other;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let res = at_other(user).await;
                if res.status() == 429 {
                    return;
                }
                assert_eq!(res.status(), 200);
                drop(res);
                assert!(std::time::Instant::now() < deadline, "{why}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    refused_at_other("ada", "ada's third stream was taken at the other node").await;
    refused_at_other("gina", "three streams per address, over both nodes").await;
    drop(second_ada);
    drop(erin);
    // Closed streams stop counting there too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let gina = loop {
        let res = at_other("gina").await;
        if res.status() == 200 {
            break res;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closed streams still count at the other node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(gina);
    other.stop().await;
    app.stop().await;
    sa.stop().await;
}

/// Bodies as documented: a prompt may be 6 MiB (4 images of 1 MB fit), everything else 256 KiB;
/// over it is a 413 with a JSON error, whether the length is declared or the body is chunked.
#[tokio::test]
async fn bodies_are_held_to_their_limits_chunked_or_not() {
    use base64::Engine;
    let (app, sa) = app().await;
    let ws = app.create("pi").await;
    let url = |endpoint: &str| format!("{}/api/workspace/{endpoint}", app.base);
    let token = app.token_named(&ws, "ada", "Ada").await;
    let image = {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(huddle::model::MAX_IMAGE_BYTES, 0);
        base64::engine::general_purpose::STANDARD.encode(png)
    };
    let images: Vec<_> = (0..huddle::model::MAX_IMAGES)
        .map(|_| json!({"mimeType": "image/png", "data": image}))
        .collect();
    let (status, body) = send(
        app.http
            .post(url("prompt"))
            .bearer_auth(&token)
            .json(&json!({"workspaceId": ws, "text": "look at these", "images": images})),
    )
    .await;
    assert_eq!(status, 200, "4 images of 1 MB are accepted: {body}");

    let huge = "x".repeat(7 * 1024 * 1024);
    let (status, body) = send(
        app.http
            .post(url("prompt"))
            .bearer_auth(&token)
            .json(&json!({"workspaceId": ws, "text": huge})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    let big = serde_json::to_vec(&json!({"agent": "x".repeat(300 * 1024)})).unwrap();
    let (status, body) = send(
        app.http
            .post(url("create"))
            .header("content-type", "application/json")
            .body(big.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // The same without a declared length: chunks until it is over the limit.
    let chunks = futures::stream::iter(
        big.chunks(16 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, body) = send(
        app.http
            .post(url("create"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // A small chunked body still works.
    let small = serde_json::to_vec(&json!({"agent": "mock"})).unwrap();
    let (status, body) = send(
        app.http
            .post(url("create"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter([Ok::<
                _,
                std::io::Error,
            >(
                small
            )]))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
    sa.stop().await;
}
