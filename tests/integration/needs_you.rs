//! Needs you: the inbox across workspaces, mentions by person id, Web Push (real RFC 8291
//! encryption and VAPID signatures, checked by a fake push service that decrypts with the
//! subscription's own keys) and the team webhook (HMAC-checked by a local receiver), across a
//! restart too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use huddle::model::RoomEvent;
use serde_json::{Value, json};
use web_push_native::jwt_simple::prelude::*;

use crate::common::*;

const LONG: Duration = Duration::from_secs(300);

/// A push service: endpoints `/push/<name>`; each answers as told (200, 410, or never) and
/// decrypts what it gets with the keys of that name's subscription.
#[derive(Clone, Default)]
struct PushService {
    inner: Arc<Mutex<PushInner>>,
}

#[derive(Default)]
struct PushInner {
    keys: HashMap<String, (web_push_native::p256::SecretKey, [u8; 16])>,
    answers: HashMap<String, u16>,
    /// Per name: each payload, decrypted.
    got: HashMap<String, Vec<Value>>,
    /// Requests whose VAPID signature or encryption did not check out.
    bad: Vec<String>,
    /// A VAPID public key seen, to compare with the instance's.
    vapid_keys: Vec<String>,
}

const HANG: u16 = 0;

impl PushService {
    /// A subscription of a browser: its endpoint and its keys, as `toJSON()` gives them.
    fn subscribe(&self, base: &str, name: &str, answer: u16) -> Value {
        let secret = web_push_native::p256::SecretKey::random(
            &mut web_push_native::p256::elliptic_curve::rand_core::OsRng,
        );
        let auth: [u8; 16] = rand::random();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let public = b64.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let mut inner = self.inner.lock().unwrap();
        inner.keys.insert(name.into(), (secret, auth));
        inner.answers.insert(name.into(), answer);
        json!({"endpoint": format!("{base}/push/{name}"), "keys": {"p256dh": public, "auth": b64.encode(auth)}})
    }

    fn got(&self, name: &str) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .got
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    async fn serve(self) -> String {
        let app = axum::Router::new()
            .route("/push/{name}", axum::routing::post(push))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }
}

async fn push(
    State(svc): State<PushService>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = svc.inner.lock().unwrap().answers.get(&name).copied();
    match answer {
        Some(HANG) => std::future::pending::<()>().await,
        Some(410) => return StatusCode::GONE,
        None => return StatusCode::NOT_FOUND,
        _ => {}
    }
    let check = || -> Result<(Value, String), String> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Authorization")?;
        // `vapid t=<jwt>, k=<public key>` (RFC 8292).
        let rest = auth.strip_prefix("vapid ").ok_or("not vapid")?;
        let mut t = "";
        let mut k = "";
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("t=") {
                t = v;
            } else if let Some(v) = part.strip_prefix("k=") {
                k = v;
            }
        }
        let key_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k)
            .map_err(|e| e.to_string())?;
        let key = ES256PublicKey::from_bytes(&key_bytes).map_err(|e| e.to_string())?;
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let audience = format!("http://{}", host.split(':').next().unwrap_or(""));
        let options = VerificationOptions {
            allowed_audiences: Some(HashSet::from_strings(&[audience])),
            ..Default::default()
        };
        key.verify_token::<NoCustomClaims>(t, Some(options))
            .map_err(|e| format!("VAPID: {e}"))?;
        if headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            != Some("aes128gcm")
        {
            return Err("not aes128gcm".into());
        }
        let inner = svc.inner.lock().unwrap();
        let (secret, auth) = inner.keys.get(&name).ok_or("no keys")?;
        let plain = web_push_native::decrypt(
            body.to_vec(),
            secret,
            web_push_native::Auth::from_slice(auth),
        )
        .map_err(|e| format!("decrypt: {e:?}"))?;
        Ok((
            serde_json::from_slice(&plain).map_err(|e| e.to_string())?,
            k.to_string(),
        ))
    };
    let checked = check();
    let mut inner = svc.inner.lock().unwrap();
    match checked {
        Ok((payload, k)) => {
            inner.got.entry(name).or_default().push(payload);
            inner.vapid_keys.push(k);
            StatusCode::CREATED
        }
        Err(e) => {
            inner.bad.push(e);
            StatusCode::BAD_REQUEST
        }
    }
}

/// A team webhook receiver: checks each POST's signature with the secret it is given.
#[derive(Clone, Default)]
struct Hook {
    inner: Arc<Mutex<HookInner>>,
}

#[derive(Default)]
struct HookInner {
    secret: String,
    /// Answer 503 (the receiver is down) while set.
    down: bool,
    got: Vec<Value>,
    bad: usize,
}

impl Hook {
    async fn serve(self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    fn got(&self) -> Vec<Value> {
        self.inner.lock().unwrap().got.clone()
    }
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inner = h.inner.lock().unwrap();
    if inner.down {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let sig = headers
        .get("x-huddle-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The receiver's own HMAC, as a receiver would compute it.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(inner.secret.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if sig != expected {
        inner.bad += 1;
        return StatusCode::UNAUTHORIZED;
    }
    inner.got.push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

/// POST /api/{path} with a bearer token.
async fn api(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .http
        .post(format!("{}/api/{path}", app.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn person_id(app: &TestApp, token: &str) -> String {
    let (status, me) = api(app, token, "me", json!({})).await;
    assert_eq!(status, 200, "{me}");
    me["personId"].as_str().unwrap().to_string()
}

async fn inbox(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = api(app, token, "inbox", json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Waits (60 s at most: the machine may be slow) for `check` to hold.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_inbox_pushes_and_the_webhook_tell_each_person_what_needs_them() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let pushes = PushService::default();
    let push_base = pushes.clone().serve().await;
    let hook = Hook::default();
    let hook_url = hook.clone().serve().await;

    let ws = app.create("pi").await;
    let other_ws = app.create("pi").await;
    let ada = app.token(&ws, "ada").await;
    let bob = app.token(&ws, "bob").await;
    let carol = app.token(&ws, "carol").await;
    let dave = app.token(&ws, "dave").await;
    let (ada_id, bob_id, carol_id) = (
        person_id(&app, &ada).await,
        person_id(&app, &bob).await,
        person_id(&app, &carol).await,
    );

    // The webhook: owners only; the secret is answered once.
    let (status, _) = api(
        &app,
        &ada,
        "workspace/webhook",
        json!({"workspaceId": ws, "url": hook_url}),
    )
    .await;
    assert_eq!(status, 403, "a member sets no webhook");
    let (status, set) = api(
        &app,
        ADMIN_TOKEN,
        "workspace/webhook",
        json!({"workspaceId": ws, "url": hook_url}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    hook.inner.lock().unwrap().secret = set["secret"].as_str().unwrap().to_string();
    let (status, bad) = api(
        &app,
        ADMIN_TOKEN,
        "workspace/webhook",
        json!({"workspaceId": ws, "url": "ftp://x"}),
    )
    .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("bad_request")),
        "{bad}"
    );

    // Pushes: Bob's browser, a browser of his whose subscription expired (410), Dave's whose
    // push service hangs; Carol has a Huddle tab open (her inbox stream), so she gets no push.
    let settings = api(&app, &bob, "notify/settings", json!({})).await.1;
    assert!(
        settings["vapidPublicKey"].as_str().unwrap().len() > 80,
        "{settings}"
    );
    for (token, name, answer) in [
        (&bob, "bob", 201),
        (&bob, "bob-old", 410),
        (&dave, "dave", HANG),
        (&carol, "carol", 201),
    ] {
        let sub = pushes.subscribe(&push_base, name, answer);
        let (status, body) = api(&app, token, "push/subscribe", sub).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, bad) = api(
        &app,
        &bob,
        "push/subscribe",
        json!({"endpoint": "x", "keys": {"p256dh": "a", "auth": "b"}}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let carol_tab = app
        .http
        .get(format!("{}/api/inbox/events", app.base))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(carol_tab.status(), 200);
    let mut carol_stream = Sse::from_response(carol_tab);

    // Ada's prompt asks permission: everyone who may answer has it in their inbox.
    let mut sse = app.events(&ws, "ada", None).await;
    let asked_at = Instant::now();
    app.prompt(&ws, "ada", "permission").await;
    let asked = sse
        .until(|e| matches!(e.event, RoomEvent::PermissionRequested { .. }))
        .await;
    let asked = asked.last().unwrap();
    let request_id = match &asked.event {
        RoomEvent::PermissionRequested { request_id, .. } => request_id.clone(),
        _ => unreachable!(),
    };
    let item = eventually("the request in Bob's inbox", async || {
        inbox(&app, &bob)
            .await
            .into_iter()
            .find(|i| i["kind"] == "permission")
    })
    .await;
    let to_inbox = asked_at.elapsed();
    assert_eq!(item["workspaceId"], ws.as_str());
    assert_eq!(item["seq"], asked.seq);
    assert_eq!(item["requestId"], request_id.as_str());
    assert!(
        item["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#seq-{}", asked.seq))
    );
    assert_eq!(inbox(&app, &ada).await.len(), 1, "Ada may answer too");
    // Carol's open page hears of it.
    let heard = tokio::time::timeout(
        Duration::from_secs(30),
        carol_stream.raw_until("inbox", |d| d.contains(&ws)),
    )
    .await
    .expect("Carol's page hears of the request");
    assert!(heard.contains(&ws));
    // Bob's browser gets the push, decrypted with his keys; the expired one is dropped.
    let got = eventually("Bob's push", async || pushes.got("bob").first().cloned()).await;
    let to_push = asked_at.elapsed();
    assert_eq!(got["kind"], "permission");
    assert_eq!(got["threadId"], item["threadId"]);
    assert!(got["url"].as_str().unwrap().starts_with(&app.base));
    eventually("the expired subscription dropped", async || {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM push_subscriptions WHERE endpoint LIKE '%bob-old'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (n == 0).then_some(())
    })
    .await;
    // The webhook, signed.
    let posted = eventually("the webhook's request", async || {
        hook.got().first().cloned()
    })
    .await;
    assert_eq!(posted["event"], "permission_requested");
    assert_eq!(posted["requestId"], request_id.as_str());
    assert!(posted["text"].as_str().unwrap().contains("asks permission"));

    // Answered: it leaves everyone's inbox. The turn ends: Ada, who started it, has that.
    let (status, _) = app
        .post("permission", json!({"workspaceId": ws, "userId": "bob", "requestId": request_id, "optionId": "allow"}))
        .await;
    assert_eq!(status, 200);
    let ended = sse.until(is_turn_end).await.last().unwrap().seq;
    let ada_items = eventually("Ada's ended turn", async || {
        let items = inbox(&app, &ada).await;
        (items.len() == 1 && items[0]["kind"] == "turn_ended").then_some(items)
    })
    .await;
    assert_eq!(ada_items[0]["seq"], ended);
    assert!(
        inbox(&app, &bob).await.is_empty(),
        "answered: not Bob's any more"
    );

    // A mention, team-only, by person id: it reaches Bob, highlighted in the log by id.
    let (status, body) = app
        .post("prompt", json!({"workspaceId": ws, "userId": "ada", "text": "@bob look at this", "teamOnly": true, "mentions": [bob_id]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let said = sse.upto(body["seq"].as_i64().unwrap()).await;
    match &said.last().unwrap().event {
        RoomEvent::ChatUser { mentions, .. } => {
            assert_eq!(mentions.len(), 1);
            assert_eq!(mentions[0].person_id, bob_id);
        }
        e => panic!("{e:?}"),
    }
    let mention = eventually("Bob's mention", async || {
        inbox(&app, &bob)
            .await
            .into_iter()
            .find(|i| i["kind"] == "mention")
    })
    .await;
    assert_eq!(mention["author"], "ada");
    eventually("the mention pushed to Bob", async || {
        pushes
            .got("bob")
            .iter()
            .find(|p| p["kind"] == "mention")
            .cloned()
    })
    .await;
    // Someone outside the workspace cannot be mentioned.
    let outsider = app.token(&other_ws, "zed").await;
    let zed = person_id(&app, &outsider).await;
    let (status, body) = app
        .post("prompt", json!({"workspaceId": ws, "userId": "ada", "text": "hi", "teamOnly": true, "mentions": [zed]}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    // Read: gone from the inbox.
    let (status, _) = api(
        &app,
        &bob,
        "inbox/read",
        json!({"workspaceId": ws, "threadId": mention["threadId"], "seq": mention["seq"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(inbox(&app, &bob).await.is_empty());

    // Settings: "important" pushes no ended turns; a muted workspace pushes nothing.
    let (status, s) = api(&app, &bob, "notify/level", json!({"level": "loud"})).await;
    assert_eq!(status, 400, "{s}");
    let (_, s) = api(&app, &bob, "notify/level", json!({"level": "important"})).await;
    assert_eq!(s["level"], "important");
    let (_, s) = api(
        &app,
        &bob,
        "notify/mute",
        json!({"workspaceId": ws, "muted": true}),
    )
    .await;
    assert_eq!(s["muted"], json!([ws]));
    let before = pushes.got("bob").len();
    let (status, body) = app
        .post("prompt", json!({"workspaceId": ws, "userId": "ada", "text": "@bob again", "teamOnly": true, "mentions": [bob_id]}))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the muted mention in Bob's inbox", async || {
        inbox(&app, &bob)
            .await
            .into_iter()
            .find(|i| i["kind"] == "mention")
    })
    .await;

    // Carol had a tab open the whole time: no push; Dave's push service hangs: the room went on.
    assert!(
        pushes.got("carol").is_empty(),
        "a person with a tab open gets no push"
    );
    assert!(pushes.got("dave").is_empty());
    let bad = pushes.inner.lock().unwrap().bad.clone();
    assert!(
        bad.is_empty(),
        "every push was signed and encrypted right: {bad:?}"
    );
    let keys = pushes.inner.lock().unwrap().vapid_keys.clone();
    assert!(
        keys.iter()
            .all(|k| *k == settings["vapidPublicKey"].as_str().unwrap())
    );
    // The sender got to the muted mention's row and skipped it.
    eventually("the muted mention's push row done", async || {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE kind = 'push' AND person_id = $1 AND sent_at IS NULL",
        )
        .bind(&bob_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(pushes.got("bob").len(), before, "muted: nothing pushed");
    // The webhook got the request and the ended turn, once each, all signed.
    let posted = hook.got();
    let events: Vec<&str> = posted
        .iter()
        .map(|p| p["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["permission_requested", "turn_ended"],
        "{posted:#?}"
    );
    assert_eq!(hook.inner.lock().unwrap().bad, 0);
    assert_eq!(posted[1]["promptedBy"], "ada");
    eprintln!(
        "needs you: a permission request reached another person's inbox in {} ms and their push service in {} ms",
        to_inbox.as_millis(),
        to_push.as_millis()
    );
    let _ = (ada_id, carol_id);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn the_webhook_sends_each_event_once_across_a_restart() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let hook = Hook::default();
    let hook_url = hook.clone().serve().await;
    let ws = app.create("pi").await;
    let (_, set) = api(
        &app,
        ADMIN_TOKEN,
        "workspace/webhook",
        json!({"workspaceId": ws, "url": hook_url}),
    )
    .await;
    hook.inner.lock().unwrap().secret = set["secret"].as_str().unwrap().to_string();
    // The receiver is down: what happens meanwhile waits in the outbox.
    hook.inner.lock().unwrap().down = true;
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "echo one").await;
    sse.until(is_turn_end).await;
    app.prompt(&ws, "ada", "echo two").await;
    sse.until(is_turn_end).await;
    drop(sse);
    app.stop().await;
    // A new Huddle on the same database; the receiver is back.
    hook.inner.lock().unwrap().down = false;
    let app = spawn_app(&pool, &sa, LONG).await;
    let got = eventually("both ended turns posted", async || {
        let got = hook.got();
        (got.len() >= 2).then_some(got)
    })
    .await;
    // Long enough for a doubled send to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = if hook.got().len() > got.len() {
        hook.got()
    } else {
        got
    };
    // Retried rows may arrive in another order: each carries its seq.
    let mut seqs: Vec<i64> = got.iter().map(|g| g["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!((got.len(), seqs.len()), (2, 2), "each once: {got:#?}");
    assert!(got.iter().all(|g| g["event"] == "turn_ended"));
    assert_eq!(hook.inner.lock().unwrap().bad, 0);
    app.stop().await;
    sa.stop().await;
}

/// Attack: an owner's webhook or a person's push endpoint aimed at the machines beside Huddle
/// (loopback, private networks, the cloud metadata address). The real binary, on its defaults,
/// refuses them with a clear error.
#[tokio::test]
async fn webhooks_and_pushes_cannot_reach_private_addresses() {
    use crate::process::{Huddle, free_port, stop, temp_dir};
    let (_pool, url) = fresh_db().await;
    let data = temp_dir("huddle-outbound");
    let huddle = Huddle::start(&url, &data, free_port()).await;
    let (_, created) = huddle.post("create", json!({"agent": "pi"})).await;
    let ws = created["workspaceId"].as_str().unwrap().to_string();
    for target in [
        "http://127.0.0.1:5432/",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/",
        "http://[::1]/",
    ] {
        let (status, body) = huddle
            .post("webhook", json!({"workspaceId": ws, "url": target}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{target}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not a public address"),
            "{body}"
        );
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
    let secret = web_push_native::p256::SecretKey::random(
        &mut web_push_native::p256::elliptic_curve::rand_core::OsRng,
    );
    let keys = json!({"p256dh": b64.encode(secret.public_key().to_encoded_point(false).as_bytes()), "auth": b64.encode([7u8; 16])});
    for endpoint in [
        "https://127.0.0.1/push",
        "https://192.168.1.1/push",
        "http://push.example/x",
    ] {
        let res = reqwest::Client::new()
            .post(format!("{}/api/push/subscribe", huddle.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"endpoint": endpoint, "keys": keys}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{endpoint}: {body}"
        );
    }
    // A public one is taken.
    let (status, body) = huddle
        .post(
            "webhook",
            json!({"workspaceId": ws, "url": "https://hooks.example/huddle"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    stop(huddle, &data).await;
    let _ = std::fs::remove_dir_all(&data);
}
