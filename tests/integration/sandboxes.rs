//! A sandbox per workspace: what a member can reach by asking the agent, runaway commands, sandbox
//! hosts that go away and come back, deleting and moving workspaces. The scripted agent's `shell`
//! script runs what the member asks in its working directory, as a real agent's Bash tool would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::process::{Huddle, free_port, stop, temp_dir};
use huddle::model::{NoticeLevel, RoomEvent};
use serde_json::json;

const LONG: Duration = Duration::from_secs(3600);

/// What the agent said in the turn that runs `cmd` in the room's sandbox.
async fn shell(huddle: &Huddle, ws: &str, after: &mut i64, cmd: &str) -> String {
    let mut sse = huddle.events(ws, *after).await;
    let (status, body) = huddle
        .post(
            "prompt",
            json!({"workspaceId": ws, "text": format!("shell {cmd}")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let turn = sse.until(is_turn_end).await;
    *after = turn.last().unwrap().seq;
    turn.iter().filter_map(entry_text).collect()
}

fn failed(out: &str) -> bool {
    !out.starts_with("exit 0\n")
}

/// The escapes a member found by asking the agent, each tried again through the real `huddle`
/// binary on its embedded defaults (its own Postgres, a bubblewrap sandbox per workspace).
#[tokio::test]
async fn a_member_cannot_reach_the_instance_or_other_workspaces_through_the_agent() {
    let data = temp_dir("huddle-escape");
    let huddle = Huddle::start_embedded(
        &data,
        free_port(),
        &[
            ("SANDBOX_AGENT_TOKEN", "canary-sandbox-agent-token"),
            (
                "HUDDLE_AGENT_ENV",
                "ANTHROPIC_API_KEY,HUDDLE_ADMIN_TOKEN,DATABASE_URL",
            ),
            ("ANTHROPIC_API_KEY", "sk-ant-allowed"),
        ],
    )
    .await;
    let create = async || {
        let (status, body) = huddle.post("create", json!({"agent": "pi"})).await;
        assert_eq!(status, 200, "{body}");
        let ws = body["workspaceId"].as_str().unwrap().to_string();
        let (_, info) = huddle.post("info", json!({"workspaceId": ws})).await;
        (ws, info)
    };
    let (a, info_a) = create().await;
    let (_b, info_b) = create().await;
    assert_eq!(info_a["sandbox"]["provider"], "local");
    assert_ne!(info_a["sandbox"]["id"], info_b["sandbox"]["id"]);
    let dir_a = PathBuf::from(info_a["workingDir"].as_str().unwrap());
    let dir_b = PathBuf::from(info_b["workingDir"].as_str().unwrap());
    std::fs::write(dir_b.join("secret.txt"), "the other workspace's secret").unwrap();
    let secrets = [
        data.join("sign-in-link"),
        data.join("postgres.password"),
        dir_b.join("secret.txt"),
    ];
    for s in &secrets {
        assert!(s.is_file(), "{} is there to be read", s.display());
    }
    let pid = huddle.child.id().unwrap();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut at = 0;
    for target in secrets.iter().map(|p| p.display().to_string()).chain([
        format!("/proc/{pid}/environ"),
        checkout.join("Cargo.toml").display().to_string(),
        checkout.join("src/server.rs").display().to_string(),
        "/root/.bashrc".into(),
    ]) {
        let out = shell(&huddle, &a, &mut at, &format!("cat {target}")).await;
        assert!(failed(&out), "{target} was read: {out}");
        if let Ok(content) = std::fs::read_to_string(&target) {
            assert!(!out.contains(content.trim()), "{target} was read: {out}");
        }
    }
    let out = shell(
        &huddle,
        &a,
        &mut at,
        &format!("ls {}", data.join("sandboxes").display()),
    )
    .await;
    assert!(failed(&out), "other sandboxes' homes are listed: {out}");

    // Only the allowlist gets in, and never Huddle's own variables or tokens.
    let env = shell(&huddle, &a, &mut at, "env").await;
    for never in ["DATABASE_URL", "HUDDLE_", "SANDBOX_AGENT_TOKEN", "canary"] {
        assert!(!env.contains(never), "{never} in the sandbox: {env}");
    }
    assert!(env.contains("ANTHROPIC_API_KEY=sk-ant-allowed"), "{env}");

    // Its own processes only.
    let ps = shell(&huddle, &a, &mut at, "ps -eo pid,args").await;
    assert!(!ps.contains("postgres") && !ps.contains("target/"), "{ps}");
    assert!(!ps.contains(&format!(" {pid} ")), "{ps}");
    let listed = ps.lines().skip(2).filter(|l| !l.trim().is_empty()).count();
    assert!(listed <= 8, "only the sandbox's processes: {ps}");

    // The system is read-only; the working directory and the home are the sandbox's to write.
    for outside in ["/usr/x", "/etc/x"] {
        let out = shell(&huddle, &a, &mut at, &format!("touch {outside}")).await;
        assert!(failed(&out), "{outside} was written: {out}");
    }
    // Elsewhere, the sandbox writes nothing on the machine: a path under /tmp (where a checkout or
    // the data directory may be) is the sandbox's own scratch; any other is read-only.
    let out = shell(
        &huddle,
        &a,
        &mut at,
        &format!(
            "touch {}/x; touch {}/x; touch /tmp/x",
            data.display(),
            checkout.display()
        ),
    )
    .await;
    assert!(!data.join("x").exists(), "{out}");
    assert!(!checkout.join("x").exists(), "{out}");
    let out = shell(
        &huddle,
        &a,
        &mut at,
        "echo made > made.txt && echo kept > ~/kept.txt",
    )
    .await;
    assert!(!failed(&out), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir_a.join("made.txt")).unwrap(),
        "made\n",
        "the file is where the room header says"
    );
    let id = info_a["sandbox"]["id"].as_str().unwrap();
    assert!(
        data.join("sandboxes")
            .join(id)
            .join("home/kept.txt")
            .is_file(),
        "the home is the sandbox's own, kept under the data directory"
    );
    stop(huddle, &data).await;
    let _ = std::fs::remove_dir_all(&data);
}

/// A fork bomb and a memory hog in one workspace: Huddle and another workspace stay responsive,
/// and the room says what happened.
#[tokio::test]
async fn a_runaway_command_takes_down_only_its_own_sandbox() {
    let (pool, _) = fresh_db().await;
    let data = temp_data_dir();
    let mut sandboxes = local_sandboxes(&data, &[]).await;
    let limits = sandboxes.local.as_ref().unwrap().limits;
    if let huddle::sandbox::limits::CgroupSupport::Unavailable(why) =
        &sandboxes.local.as_ref().unwrap().cgroups
    {
        panic!("this host takes no limits ({why}): the test needs cgroups");
    }
    sandboxes.local.as_mut().unwrap().limits.memory = 256 * 1024 * 1024;
    let app = spawn_app_on(
        &pool,
        sandboxes,
        LONG,
        loose_limits(),
        None,
        data.join("workspaces"),
    )
    .await;
    let bomb = app.create("pi").await;
    let calm = app.create("pi").await;
    let mut calm_sse = app.events(&calm, "ada", None).await;
    app.prompt(&calm, "ada", "hello").await;
    calm_sse.until(is_turn_end).await;

    let mut sse = app.events(&bomb, "ada", None).await;
    app.prompt(&bomb, "ada", "shell f(){ f | f & }; f; sleep 30")
        .await;
    // Meanwhile the other workspace and Huddle answer.
    let started = Instant::now();
    let said = sse
        .until(|e| matches!(&e.event, RoomEvent::Notice { message, .. } if message.contains("processes")))
        .await;
    let notice = said.iter().rev().find_map(|e| match &e.event {
        RoomEvent::Notice { level, message } => Some((*level, message.clone())),
        _ => None,
    });
    let (level, message) = notice.unwrap();
    assert_eq!(level, NoticeLevel::Error);
    assert!(message.contains(&limits.pids.to_string()), "{message}");
    eprintln!(
        "fork bomb: the room said so {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    app.prompt(&calm, "ada", "still here?").await;
    let turn = calm_sse.until(is_turn_end).await;
    assert!(
        turn.iter()
            .any(|e| entry_text(e).is_some_and(|t| t.contains("still here?"))),
        "the other workspace answers"
    );
    // Its turn ends visibly (before or after the room said why).
    let bombed = match said.iter().find(|e| is_turn_end(e)) {
        Some(end) => end.clone(),
        None => sse.until(is_turn_end).await.pop().unwrap(),
    };
    assert!(
        matches!(&bombed.event, RoomEvent::TurnEnded { error: Some(_), .. }),
        "the bomb's turn ends visibly: {bombed:?}"
    );
    // The next prompt starts the sandbox again.
    app.prompt(&bomb, "ada", "shell echo back").await;
    let turn = sse.until(is_turn_end).await;
    assert!(
        turn.iter()
            .any(|e| entry_text(e).is_some_and(|t| t.contains("back"))),
        "{turn:#?}"
    );

    // A memory hog: the kernel kills it, the agent says so, the room says why.
    app.prompt(
        &bomb,
        "ada",
        "shell python3 -c 'x = bytearray(1024 * 1024 * 1024); print(len(x))'",
    )
    .await;
    let turn = sse.until(is_turn_end).await;
    let said: String = turn.iter().filter_map(entry_text).collect();
    assert!(
        said.starts_with("exit -9") || said.starts_with("exit 137"),
        "{said}"
    );
    let notice = sse
        .until(
            |e| matches!(&e.event, RoomEvent::Notice { message, .. } if message.contains("memory")),
        )
        .await;
    assert!(
        matches!(&notice.last().unwrap().event, RoomEvent::Notice { message, .. } if message.contains("256 MiB")),
        "{notice:?}"
    );
    app.prompt(&calm, "ada", "and now?").await;
    calm_sse.until(is_turn_end).await;
    drop(sse);
    drop(calm_sse);
    app.stop().await;
    let _ = std::fs::remove_dir_all(&data);
}

/// A sandbox host: a sandbox-agent this test starts, on a port (and with a token) it can come
/// back with.
async fn host(
    again: Option<(u16, Option<String>)>,
    state: &Path,
) -> huddle::sandbox_agent::process::SandboxAgentProcess {
    let (port, token) = again.unzip();
    huddle::sandbox_agent::process::SandboxAgentProcess::start(
        huddle::sandbox_agent::process::ProcessOptions {
            bin: Some(sandbox_agent_bin()),
            port,
            token: token.flatten(),
            extra_path: vec![fixtures_bin()],
            env: vec![("PI_ACP_STATE".into(), state.display().to_string())],
            ..Default::default()
        },
    )
    .await
    .expect("start a sandbox host")
}

/// Two sandbox hosts, ten workspaces placed over both; one host killed: the rooms on it say so
/// within 5 s and refuse prompts with a clear 503, the others go on; the host back: the next
/// prompt works, with the agent's memory.
#[tokio::test]
async fn workspaces_are_placed_over_sandbox_hosts_and_outlive_one_going_away() {
    let (pool, _) = fresh_db().await;
    let state = temp_data_dir();
    let one = host(None, &state).await;
    let two = host(None, &state).await;
    let config = |one: &huddle::sandbox_agent::process::SandboxAgentProcess,
                  two: &huddle::sandbox_agent::process::SandboxAgentProcess| {
        let mut c = on_host(one);
        c.hosts.extend(on_host(two).hosts);
        c
    };
    let app = spawn_app_on(
        &pool,
        config(&one, &two),
        LONG,
        loose_limits(),
        None,
        temp_data_dir(),
    )
    .await;
    let mut placed: Vec<(String, String)> = Vec::new();
    for _ in 0..10 {
        let ws = app.create("pi").await;
        let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
        assert_eq!(info["sandbox"]["provider"], "remote");
        placed.push((ws, info["sandbox"]["host"].as_str().unwrap().to_string()));
    }
    let one_id = format!("127.0.0.1:{}", one.port());
    let on_one: Vec<&String> = placed
        .iter()
        .filter(|(_, h)| *h == one_id)
        .map(|(w, _)| w)
        .collect();
    assert_eq!(on_one.len(), 5, "least-loaded placement: {placed:?}");
    // Every room has something the agent will have to remember.
    let mut streams = Vec::new();
    for (ws, _) in &placed {
        let mut sse = app.events(ws, "ada", None).await;
        app.prompt(ws, "ada", &format!("remember {ws}")).await;
        sse.until(is_turn_end).await;
        streams.push(sse);
    }
    let again = (one.port(), one.endpoint().token.clone());
    let killed = Instant::now();
    one.kill().await;
    for (i, (ws, h)) in placed.iter().enumerate() {
        if *h != one_id {
            continue;
        }
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            streams[i].until(|e| matches!(&e.event, RoomEvent::Notice { message, .. } if message.contains("unreachable"))),
        )
        .await;
        assert!(got.is_ok(), "the room on the lost host says so within 5 s");
        let (status, body) = app
            .post(
                "prompt",
                json!({"workspaceId": ws, "userId": "ada", "text": "hello?"}),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(&one_id),
            "{body}"
        );
    }
    eprintln!(
        "host lost: every room on it said so {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // The other host's rooms go on.
    for (i, (ws, h)) in placed.iter().enumerate() {
        if *h == one_id {
            continue;
        }
        app.prompt(ws, "ada", "recall").await;
        let turn = streams[i].until(is_turn_end).await;
        assert!(matches!(
            &turn.last().unwrap().event,
            RoomEvent::TurnEnded { error: None, .. }
        ));
    }
    // Back where it was: the next prompt reopens the agent's session, with its memory.
    let one = host(Some(again), &state).await;
    for (i, (ws, h)) in placed.iter().enumerate() {
        if *h != one_id {
            continue;
        }
        app.prompt(ws, "ada", "recall").await;
        let turn = streams[i].until(is_turn_end).await;
        let said: String = turn.iter().filter_map(entry_text).collect();
        assert!(said.contains(&format!("remember {ws}")), "{said}");
    }
    drop(streams);
    app.stop().await;
    one.stop().await;
    two.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

/// Deleting a workspace: its owner only, after which its room, log, tokens and sandbox are gone;
/// moving one to another host: the room says the agent's memory stayed behind.
#[tokio::test]
async fn an_owner_deletes_a_workspace_and_the_instance_owner_moves_one() {
    let (pool, _) = fresh_db().await;
    let data = temp_data_dir();
    let app = spawn_sandboxed(&pool, &data, &[], None).await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (status, body) = app
        .post(
            "prompt",
            json!({"workspaceId": ws, "text": "write file", "images": [{"mimeType": "image/png", "data": png}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sse.until(is_turn_end).await;
    let (status, body) = app
        .post("invite", json!({"workspaceId": ws, "role": "member"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = app.post("info", json!({"workspaceId": ws})).await;
    let dir = PathBuf::from(info["workingDir"].as_str().unwrap());
    let sandbox_home = data
        .join("sandboxes")
        .join(info["sandbox"]["id"].as_str().unwrap());
    assert!(dir.join("hello.txt").is_file() && sandbox_home.is_dir());
    // A member may not.
    let token = app.token(&ws, "bob").await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/workspace/delete", app.base))
        .bearer_auth(&token)
        .json(&json!({"workspaceId": ws}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (status, body) = app.post("delete", json!({"workspaceId": ws})).await;
    assert_eq!(status, 200, "{body}");
    sse.closed().await;
    let (status, _) = app.post("info", json!({"workspaceId": ws})).await;
    assert_eq!(status, 404);
    assert!(!dir.exists(), "its working directory went");
    assert!(!sandbox_home.exists(), "its sandbox went");
    let res = reqwest::Client::new()
        .post(format!("{}/api/workspace/info", app.base))
        .bearer_auth(&token)
        .json(&json!({"workspaceId": ws}))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 401 | 404),
        "its tokens went"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM room_log WHERE workspace_id = $1) \
         + (SELECT count(*) FROM room_state WHERE workspace_id = $1) \
         + (SELECT count(*) FROM room_images WHERE workspace_id = $1) \
         + (SELECT count(*) FROM invites WHERE workspace_id = $1) \
         + (SELECT count(*) FROM api_tokens WHERE workspace_id = $1) \
         + (SELECT count(*) FROM memberships WHERE workspace_id = $1) \
         + (SELECT count(*) FROM sandboxes WHERE workspace_id = $1) \
         + (SELECT count(*) FROM sandbox_agent.sessions WHERE id LIKE $1 || '%')",
    )
    .bind(&ws)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "nothing of it is left in the database");
    app.stop().await;

    // Moving: two hosts (each keeping its agents' memory to itself), a workspace on the first
    // moves to the second.
    let (state_one, state_two) = (temp_data_dir(), temp_data_dir());
    let one = host(None, &state_one).await;
    let two = host(None, &state_two).await;
    let app = spawn_app_on(
        &pool,
        on_host(&one),
        LONG,
        loose_limits(),
        None,
        temp_data_dir(),
    )
    .await;
    let ws = app.create("pi").await;
    let mut sse = app.events(&ws, "ada", None).await;
    app.prompt(&ws, "ada", "remember me").await;
    sse.until(is_turn_end).await;
    // The instance owner registers the second host (a wrong token is refused).
    let add = async |token: Option<String>| {
        let res = app
            .http
            .post(format!("{}/api/sandbox-hosts/add", app.base))
            .json(&json!({"url": two.endpoint().base_url, "token": token}))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = add(Some("wrong".into())).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = add(two.endpoint().token.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["healthy"], true);
    let two_id = body["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .post("move", json!({"workspaceId": ws, "host": two_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sandbox"]["host"], two_id);
    let mut sse = app.events(&ws, "ada", None).await;
    sse.until(|e| matches!(&e.event, RoomEvent::Notice { message, .. } if message.contains("memory stays behind")))
        .await;
    app.prompt(&ws, "ada", "recall").await;
    let turn = sse.until(is_turn_end).await;
    assert!(
        turn.iter().any(|e| matches!(
            e.event,
            RoomEvent::SessionRestored {
                full_memory: false,
                ..
            }
        )),
        "the room says the agent's own memory did not come along: {turn:#?}"
    );
    let said: String = turn.iter().filter_map(entry_text).collect();
    assert!(!said.contains("remember me"), "a fresh agent: {said}");
    drop(sse);
    app.stop().await;
    one.stop().await;
    two.stop().await;
    for dir in [state_one, state_two, data] {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
