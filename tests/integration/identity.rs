//! Identity, roles, invites and tokens, through the real HTTP API: browsers are cookie jars that
//! open the links Huddle hands out, bots send API tokens.

use std::time::{Duration, Instant};

use crate::common::*;
use huddle::model::RoomEvent;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(600);

/// A browser: a cookie jar that does not follow redirects (so tests see where links lead).
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .read_timeout(READ_TIMEOUT)
                .build()
                .unwrap(),
            base: app.base.clone(),
        }
    }

    /// Opens a page or a link (absolute or a path); its status and where it redirects.
    async fn open(&self, url: &str) -> (u16, Option<String>, String) {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let res = self.http.get(url).send().await.unwrap();
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (status, location, res.text().await.unwrap())
    }

    async fn api(&self, endpoint: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/api/{endpoint}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, endpoint: &str, body: Value) -> Value {
        let (status, body) = self.api(endpoint, body).await;
        assert_eq!(status, 200, "{endpoint}: {body}");
        body
    }

    async fn me(&self) -> Value {
        self.ok("me", json!({})).await
    }

    fn events(&self, ws: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/api/workspace/{ws}/events", self.base))
    }

    /// Signs in with this run's operator link.
    async fn sign_in(&self) {
        self.open("/").await;
        let (status, to, _) = self.open(&format!("/sign-in/{SIGN_IN_SECRET}")).await;
        assert_eq!((status, to.as_deref()), (303, Some("/")));
    }

    /// Opens an invite link; where it led.
    async fn join(&self, link: &str) -> (u16, Option<String>) {
        let (status, to, _) = self.open(link).await;
        (status, to)
    }
}

#[tokio::test]
async fn a_browser_gets_an_identity_and_the_sign_in_link_makes_it_the_owner() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let b = Browser::new(&app);

    // Looking stores nothing: a first visit (and a link that does not work) gets no identity.
    let counts = || async {
        let people: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
            .fetch_one(&pool)
            .await
            .unwrap();
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM tower_sessions.session")
            .fetch_one(&pool)
            .await
            .unwrap();
        (people, sessions)
    };
    let before = counts().await;
    let res = b.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let (status, body) = b.api("me", json!({})).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    // Anonymous traffic (10,000 loads of the pages a stranger can reach, four at a time) adds
    // no rows.
    let paths = [
        "/",
        "/w/0123456789abcdef0123456789abcdef",
        "/join/not-an-invite",
        "/no/such/page",
    ];
    use futures::StreamExt;
    futures::stream::iter(0..10_000)
        .map(|i| {
            let url = format!("{}{}", app.base, paths[i % paths.len()]);
            let anon = app.anon.clone();
            async move {
                let started = Instant::now();
                let status = anon.get(&url).send().await.unwrap().status().as_u16();
                (status, url, started.elapsed())
            }
        })
        .buffer_unordered(4)
        .for_each(|(status, url, took)| async move {
            assert!(status < 500, "{status} for {url} after {took:?}")
        })
        .await;
    assert_eq!(counts().await, before, "people and sessions");
    let (status, _, page) = b.open("/sign-in/not-the-secret").await;
    assert_eq!(status, 403);
    assert!(page.contains("not valid"), "{page}");
    assert_eq!(counts().await, before);

    // The sign-in link makes this browser a person, the instance owner, in an HttpOnly,
    // SameSite=Lax cookie.
    let res = b
        .http
        .get(format!("{}/sign-in/{SIGN_IN_SECRET}", app.base))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("huddle_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let me = b.me().await;
    assert_eq!(me["instanceOwner"], true);
    assert!(!me["displayName"].as_str().unwrap().is_empty());
    let person = me["personId"].as_str().unwrap().to_string();

    // Nobody creates a workspace without having been let in: not someone who only named
    // themselves (which made them a person), not someone with no identity at all.
    let named = Browser::new(&app);
    let me = named.ok("me/name", json!({"displayName": "Cy"})).await;
    assert_eq!(me["displayName"], "Cy");
    assert_eq!(counts().await.0, before.0 + 2, "the operator and Cy");
    let (status, body) = named.api("workspace/create", json!({})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = app
        .anon
        .post(format!("{}/api/workspace/create", app.base))
        .json(&json!({}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(body.json::<Value>().await.unwrap()["code"], "unauthorized");
    // The sign-in link again: same person, still the instance owner, on a new session id.
    b.sign_in().await;
    let me = b.me().await;
    assert_eq!(me["personId"], person.as_str());
    assert_eq!(me["instanceOwner"], true);
    let csrf = me["csrf"].as_str().unwrap().to_string();
    assert!(csrf.len() >= 20);

    // The no-JS form needs its CSRF token.
    let form = |token: &str| {
        b.http
            .post(format!("{}/new", app.base))
            .form(&[("agent", "mock"), ("csrf", token)])
            .send()
    };
    assert_eq!(form("nope").await.unwrap().status(), 403);
    let res = form(&csrf).await.unwrap();
    assert_eq!(res.status(), 303);
    let to = res.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/w/"), "{to}");
    let (status, _, page) = b.open(&to).await;
    assert_eq!(status, 200);
    assert!(page.contains("data-testid=\"my-role\""), "the owner's room");

    // The name is kept on the server; a name with a control character is refused.
    let renamed = b.ok("me/name", json!({"displayName": "Ada"})).await;
    assert_eq!(renamed["displayName"], "Ada");
    let (status, body) = b.api("me/name", json!({"displayName": "A\u{0}da"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(b.me().await["displayName"], "Ada");

    // A "may create workspaces" invite.
    let link = b.ok("instance/invite", json!({})).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link.starts_with(&app.base), "{link}");
    let c = Browser::new(&app);
    assert_eq!(c.join(&link).await, (303, Some("/".into())));
    let created = c.ok("workspace/create", json!({})).await;
    assert!(created["workspaceId"].is_string());
    let (status, _) = c.api("instance/invite", json!({})).await;
    assert_eq!(status, 403, "only the instance owner makes creator invites");

    // A bad bearer token is refused, not treated as nobody.
    let res = app
        .anon
        .post(format!("{}/api/me", app.base))
        .bearer_auth("hud_wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
    sa.stop().await;
}

fn is_permission_request(e: &huddle::model::RoomEntry) -> Option<String> {
    match &e.event {
        RoomEvent::PermissionRequested { request_id, .. } => Some(request_id.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn owners_members_and_viewers_get_what_their_role_allows() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let owner = Browser::new(&app);
    owner.sign_in().await;
    let ws = owner.ok("workspace/create", json!({"agent": "pi"})).await["workspaceId"]
        .as_str()
        .unwrap()
        .to_string();
    let link = |role: &'static str| {
        let (owner, ws) = (&owner, ws.clone());
        async move {
            owner
                .ok("workspace/invite", json!({"workspaceId": ws, "role": role}))
                .await
        }
    };
    let member_invite = link("member").await;
    let viewer_invite = link("viewer").await;
    let at = |v: &Value| v["url"].as_str().unwrap().to_string();
    let room = format!("/w/{ws}");

    let member = Browser::new(&app);
    assert_eq!(
        member.join(&at(&member_invite)).await,
        (303, Some(room.clone()))
    );
    let viewer = Browser::new(&app);
    assert_eq!(
        viewer.join(&at(&viewer_invite)).await,
        (303, Some(room.clone()))
    );
    member.ok("me/name", json!({"displayName": "Mel"})).await;
    let member_id = member.me().await["personId"].as_str().unwrap().to_string();
    let owner_id = owner.me().await["personId"].as_str().unwrap().to_string();

    // Without a membership: a 403 page that says to ask for an invite, and 403 JSON elsewhere.
    let outsider = Browser::new(&app);
    outsider.ok("me/name", json!({"displayName": "Otto"})).await;
    let (status, _, page) = outsider.open(&room).await;
    assert_eq!(status, 403);
    assert!(page.contains("Ask the owner for an invite"), "{page}");
    let res = outsider.events(&ws).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "forbidden");
    let (status, _) = outsider
        .api("workspace/prompt", json!({"workspaceId": ws, "text": "hi"}))
        .await;
    assert_eq!(status, 403);

    // The viewer sees the room live; presence shows each person's role.
    let res = viewer.events(&ws).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut viewer_sse = Sse::from_response(res);
    let info = viewer
        .ok("workspace/info", json!({"workspaceId": ws}))
        .await;
    assert!(
        info["online"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "viewer"),
        "{info}"
    );
    assert_eq!(info["workingDir"], "", "viewers are not shown paths");
    owner
        .ok(
            "workspace/prompt",
            json!({"workspaceId": ws, "text": "permission please"}),
        )
        .await;
    let request_id = loop {
        if let Some(id) = is_permission_request(&viewer_sse.next().await) {
            break id;
        }
    };
    // A viewer can do nothing.
    for (endpoint, body) in [
        (
            "workspace/prompt",
            json!({"workspaceId": ws, "text": "let me"}),
        ),
        ("workspace/cancel", json!({"workspaceId": ws})),
        ("workspace/typing", json!({"workspaceId": ws})),
        (
            "workspace/permission",
            json!({"workspaceId": ws, "requestId": request_id, "optionId": "allow"}),
        ),
        ("workspace/members", json!({"workspaceId": ws})),
        (
            "workspace/invite",
            json!({"workspaceId": ws, "role": "member"}),
        ),
    ] {
        let (status, body) = viewer.api(endpoint, body).await;
        assert_eq!(status, 403, "{endpoint}: {body}");
    }

    // Approvers: once the owner chooses them, a member who is not one cannot answer.
    owner
        .ok(
            "workspace/approvers-only",
            json!({"workspaceId": ws, "enabled": true}),
        )
        .await;
    let answer = json!({"workspaceId": ws, "requestId": request_id, "optionId": "allow"});
    let (status, body) = member.api("workspace/permission", answer.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("approvers"));
    owner
        .ok(
            "workspace/members/approver",
            json!({"workspaceId": ws, "personId": member_id, "approver": true}),
        )
        .await;
    member.ok("workspace/permission", answer).await;
    let answered = viewer_sse
        .until(|e| matches!(e.event, RoomEvent::PermissionAnswered { .. }))
        .await;
    assert!(matches!(&answered.last().unwrap().event,
        RoomEvent::PermissionAnswered { user_id, display_name, .. } if *user_id == member_id && display_name == "Mel"));
    viewer_sse.until(is_turn_end).await;

    // Someone else's id in the body changes nothing: the author is the sender.
    let spoof = json!({"workspaceId": ws, "userId": owner_id, "displayName": "The Owner",
        "text": "echo from mel"});
    let seq = member.ok("workspace/prompt", spoof).await["seq"]
        .as_i64()
        .unwrap();
    let got = viewer_sse.upto(seq).await;
    assert!(matches!(&got.last().unwrap().event,
        RoomEvent::ChatUser { user_id, display_name, .. } if *user_id == member_id && display_name == "Mel"));
    viewer_sse.until(is_turn_end).await;

    // The agent names a file by its full path (the scripted agent says where it wrote).
    let seq = member
        .ok(
            "workspace/prompt",
            json!({"workspaceId": ws, "text": "write file"}),
        )
        .await["seq"]
        .as_i64()
        .unwrap();
    let wrote = viewer_sse.until(is_turn_end).await;
    let streamed = serde_json::to_string(&wrote).unwrap();
    assert!(streamed.contains("wrote hello.txt"), "{streamed}");

    // Paths on the machine reach owners and members, not viewers: neither in the snapshot, the
    // page nor the stream, live or replayed (the agent's `cwd` in the request that opened its
    // session, and what it says of files in it, which is shown relative to it).
    let dir = owner.ok("workspace/info", json!({"workspaceId": ws})).await["workingDir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dir.ends_with(&ws), "{dir}");
    let snapshot = viewer
        .ok("workspace/snapshot", json!({"workspaceId": ws}))
        .await
        .to_string();
    assert!(!snapshot.contains(&dir) && snapshot.contains("(hidden)"));
    assert!(!streamed.contains(&dir));
    let page = viewer
        .ok("workspace/page", json!({"workspaceId": ws}))
        .await
        .to_string();
    assert!(
        !page.contains(&dir) && page.contains("wrote hello.txt"),
        "{page}"
    );
    let member_snapshot = member
        .ok("workspace/snapshot", json!({"workspaceId": ws}))
        .await
        .to_string();
    assert!(member_snapshot.contains(&dir));
    let mut replay = Sse::from_response(viewer.events(&ws).send().await.unwrap());
    let replayed = replay.upto(seq).await;
    let replayed = serde_json::to_string(&replayed).unwrap();
    assert!(!replayed.contains(&dir) && replayed.contains("(hidden)"));
    drop(replay);

    // Revoked links admit nobody new; a rotated one is replaced by a new link.
    let invites = owner
        .ok("workspace/members", json!({"workspaceId": ws}))
        .await;
    assert_eq!(invites["invites"].as_array().unwrap().len(), 2);
    owner
        .ok(
            "workspace/invites/revoke",
            json!({"workspaceId": ws, "inviteId": viewer_invite["id"]}),
        )
        .await;
    let late = Browser::new(&app);
    let (status, _) = late.join(&at(&viewer_invite)).await;
    assert_eq!(status, 403);
    // Not even an identity: the link did not work.
    assert_eq!(late.events(&ws).send().await.unwrap().status(), 401);
    let rotated = owner
        .ok(
            "workspace/invites/rotate",
            json!({"workspaceId": ws, "inviteId": member_invite["id"]}),
        )
        .await;
    assert_eq!(late.join(&at(&member_invite)).await.0, 403);
    assert_eq!(late.join(&at(&rotated)).await, (303, Some(room.clone())));
    assert_eq!(late.events(&ws).send().await.unwrap().status(), 200);

    // The owner removes the viewer: their live stream is told, and ends; they are out.
    let viewer_id = viewer.me().await["personId"].as_str().unwrap().to_string();
    let res = viewer.events(&ws).send().await.unwrap();
    let mut raw = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
    owner
        .ok(
            "workspace/members/remove",
            json!({"workspaceId": ws, "personId": viewer_id}),
        )
        .await;
    let mut told = false;
    while let Ok(Some(Ok(ev))) =
        tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut raw)).await
    {
        told |= ev.event == "access";
    }
    assert!(
        told,
        "the removed viewer's stream says their access changed"
    );
    assert_eq!(viewer.events(&ws).send().await.unwrap().status(), 403);

    // A member made viewer can no longer prompt; the last owner cannot step down.
    owner
        .ok(
            "workspace/members/role",
            json!({"workspaceId": ws, "personId": member_id, "role": "viewer"}),
        )
        .await;
    let (status, _) = member
        .api("workspace/prompt", json!({"workspaceId": ws, "text": "hi"}))
        .await;
    assert_eq!(status, 403);
    let (status, body) = owner
        .api(
            "workspace/members/role",
            json!({"workspaceId": ws, "personId": owner_id, "role": "member"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    drop(viewer_sse);
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn api_tokens_are_shown_once_and_revocable_and_queued_prompts_can_be_removed() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let ws = app.create("pi").await;
    let created = app
        .post(
            "tokens/create",
            json!({"workspaceId": ws, "name": "ci-bot", "role": "viewer"}),
        )
        .await
        .1;
    let token = created["token"].as_str().unwrap().to_string();
    let (status, list) = app.post("members", json!({"workspaceId": ws})).await;
    assert_eq!(status, 200);
    assert!(
        !list.to_string().contains(&token),
        "the token is shown once"
    );
    assert!(
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "ci-bot" && t["role"] == "viewer")
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM api_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|h| h.len() == 64 && *h != token),
        "hashed"
    );
    // A viewer token watches and cannot act.
    let watch = app
        .anon
        .get(format!("{}/api/workspace/{ws}/events", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    drop(watch);
    let (status, _) = app
        .post_as(
            &token,
            "prompt",
            json!({"workspaceId": ws, "text": "echo hi"}),
        )
        .await;
    assert_eq!(status, 403);
    app.post(
        "tokens/revoke",
        json!({"workspaceId": ws, "tokenId": created["id"]}),
    )
    .await;
    let (status, body) = app
        .post_as(&token, "info", json!({"workspaceId": ws}))
        .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // Queued prompts: their author or the owner may take them off the queue, nobody else.
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "slow").await;
    let ada_queued = app.prompt(&ws, "ada", "echo one").await;
    let bob_queued = app.prompt(&ws, "bob", "echo two").await;
    let remove = |seq: i64| json!({"workspaceId": ws, "userId": "ada", "seq": seq});
    let (status, body) = app.post("queue/remove", remove(bob_queued)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.post("queue/remove", remove(ada_queued)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .post(
            "queue/remove",
            json!({"workspaceId": ws, "seq": bob_queued}),
        )
        .await;
    assert_eq!(
        status, 200,
        "the owner (here the operator) removes anyone's"
    );
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(info["queue"], json!([]));
    let removed = sse
        .until(|e| matches!(&e.event, RoomEvent::PromptRemoved { prompt_seq, .. } if *prompt_seq == bob_queued))
        .await;
    assert_eq!(
        removed
            .iter()
            .filter(|e| matches!(e.event, RoomEvent::PromptRemoved { .. }))
            .count(),
        2
    );
    app.post("cancel", json!({"workspaceId": ws})).await;
    let ended = sse.until(is_turn_end).await;
    assert!(
        !ended
            .iter()
            .any(|e| matches!(e.event, RoomEvent::TurnStarted { prompt_seq, .. } if prompt_seq == ada_queued)),
        "a removed prompt never runs"
    );
    app.stop().await;
    sa.stop().await;
}

#[tokio::test]
async fn an_owner_may_pick_a_directory_under_the_projects_root_only() {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let root = std::env::temp_dir().join(format!("huddle-projects-{}", std::process::id()));
    let project = root.join("shop");
    std::fs::create_dir_all(&project).unwrap();
    let escape = root.join("escape");
    let _ = std::fs::remove_file(&escape);
    std::os::unix::fs::symlink("/etc", &escape).unwrap();
    // A picked directory is on this machine: its agent runs in a local sandbox.
    let data = temp_data_dir();
    let app = spawn_sandboxed(&pool, &data, &[], Some(root.clone())).await;
    let (status, body) = app
        .post("create", json!({"agent": "mock", "directory": "shop"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let ws = body["workspaceId"].as_str().unwrap();
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(
        info["workingDir"],
        project.canonicalize().unwrap().display().to_string()
    );
    for outside in ["../", "/etc", "escape", "missing", ".", "shop/.."] {
        let (status, body) = app
            .post("create", json!({"agent": "mock", "directory": outside}))
            .await;
        assert_eq!(status, 400, "{outside}: {body}");
    }
    // The picked directory swapped for a link to elsewhere after the workspace was made: the
    // agent does not start there, and the room says why.
    std::fs::remove_dir_all(&project).unwrap();
    std::os::unix::fs::symlink("/etc", &project).unwrap();
    let mut sse = app.events(ws, "ada", None).await;
    app.prompt(ws, "ada", "write file").await;
    let turn = sse.until(is_turn_end).await;
    assert!(
        turn.iter()
            .any(|e| matches!(&e.event, RoomEvent::Notice { message, .. }
            if message.contains("no longer a directory under the projects root"))),
        "{turn:#?}"
    );
    assert!(matches!(
        &turn.last().unwrap().event,
        RoomEvent::TurnEnded { error: Some(_), .. }
    ));
    assert!(!std::path::Path::new("/etc/hello.txt").exists());
    std::fs::remove_file(&project).unwrap();
    drop(sse);
    app.stop().await;
    // Without a projects root, nobody picks a directory.
    let app = spawn_app(&pool, &sa, LONG).await;
    let (status, body) = app
        .post("create", json!({"agent": "mock", "directory": "/tmp"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("HUDDLE_PROJECTS_ROOT")
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(&root);
    sa.stop().await;
}

#[tokio::test]
async fn a_new_name_shows_in_the_rooms_its_person_is_in_at_once() {
    use futures::StreamExt;
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let owner = Browser::new(&app);
    owner.sign_in().await;
    owner.ok("me/name", json!({"displayName": "Ada"})).await;
    let ws = owner.ok("workspace/create", json!({})).await["workspaceId"]
        .as_str()
        .unwrap()
        .to_string();
    let res = owner.events(&ws).send().await.unwrap();
    let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
    let mut online = async || loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an online event within 10 s")
            .unwrap()
            .unwrap();
        if ev.event == "online" {
            let list: Vec<huddle::model::Member> = serde_json::from_str(&ev.data).unwrap();
            return list.into_iter().map(|m| m.display_name).collect::<Vec<_>>();
        }
    };
    assert_eq!(online().await, vec!["Ada".to_string()]);
    owner
        .ok("me/name", json!({"displayName": "Ada Lovelace"}))
        .await;
    assert_eq!(online().await, vec!["Ada Lovelace".to_string()]);
    app.stop().await;
    sa.stop().await;
}

/// Leptos holds back every page's data process-wide while it lists an app's routes, and a page
/// whose data was first asked for in that window never answered (leptos#4773). Apps started
/// beside a serving one, as in this test binary, must not stall its pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answer_while_other_apps_start_in_the_same_process() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, LONG).await;
    let starting = AtomicBool::new(true);
    let loads = async {
        let mut loaded = 0;
        let mut requests = futures::stream::iter(0..)
            .take_while(|_| std::future::ready(starting.load(Ordering::Relaxed)))
            .map(|_| {
                let url = format!("{}/w/0123456789abcdef0123456789abcdef", app.base);
                let anon = app.anon.clone();
                async move {
                    let started = Instant::now();
                    let status = anon.get(&url).send().await.unwrap().status().as_u16();
                    (status, started.elapsed())
                }
            })
            .buffer_unordered(4);
        while let Some((status, took)) = requests.next().await {
            assert_eq!(status, 404, "a page after {took:?}");
            loaded += 1;
        }
        loaded
    };
    let starts = async {
        for _ in 0..200 {
            spawn_app(&pool, &sa, LONG).await.stop().await;
        }
        starting.store(false, Ordering::Relaxed);
    };
    let (loaded, ()) = futures::join!(loads, starts);
    assert!(loaded > 0);
    app.stop().await;
    sa.stop().await;
}
