//! Shared set-up of the integration tests: a fresh database on the real test Postgres, and the real
//! sandbox-agent with the scripted agent on its PATH.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod lb;

use huddle::sandbox_agent::process::{ProcessOptions, SandboxAgentProcess};
use huddle::sandbox_agent::{PostgresPersist, SandboxAgent, SessionNotice};
use sqlx::PgPool;
use tokio::sync::{OnceCell, mpsc};

/// A new, migrated database for one test on the Postgres that `scripts/test.sh` runs.
pub async fn fresh_db() -> (PgPool, String) {
    let admin_url = std::env::var("HUDDLE_TEST_DATABASE_URL").expect(
        "HUDDLE_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a Postgres for them",
    );
    let admin = PgPool::connect(&admin_url)
        .await
        .expect("connect to the test Postgres");
    let name = format!("t_{}", uuid_like());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("HUDDLE_TEST_DATABASE_URL has no database part"),
    };
    (
        huddle::store::connect(&url)
            .await
            .expect("migrate test database"),
        url,
    )
}

fn uuid_like() -> String {
    huddle::sandbox_agent::random_id().replace('-', "")
}

/// Waits (60 s at most) until a Huddle at `base` answers its health check.
pub async fn wait_up(http: &reqwest::Client, base: &str) {
    let t = std::time::Instant::now();
    while http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "huddle did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh data directory.
pub fn temp_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("huddle-data-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn fixtures_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin")
}

pub fn sandbox_agent_bin() -> PathBuf {
    std::env::var_os("SANDBOX_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(huddle::sandbox_agent::process::BUNDLED_BIN)
        })
}

static MOCK_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// The real sandbox-agent server, with the scripted agent on PATH as the `pi` adapter.
pub async fn start_sandbox_agent(port: Option<u16>, token: Option<String>) -> SandboxAgentProcess {
    let bin = sandbox_agent_bin();
    MOCK_INSTALLED
        .get_or_init(|| async {
            SandboxAgentProcess::install_agent(&bin, "mock")
                .await
                .expect("install the mock agent");
        })
        .await;
    SandboxAgentProcess::start(ProcessOptions {
        bin: Some(bin),
        port,
        token,
        extra_path: vec![fixtures_bin()],
        log: None,
        pid_file: None,
        env: Vec::new(),
        ..Default::default()
    })
    .await
    .expect("start sandbox-agent")
}

/// The same, with a scripted agent that cannot reopen sessions (`session/load`): sessions are
/// restored with replayed history instead.
pub async fn start_sandbox_agent_without_load() -> SandboxAgentProcess {
    SandboxAgentProcess::start(ProcessOptions {
        bin: Some(sandbox_agent_bin()),
        extra_path: vec![fixtures_bin()],
        env: vec![("PI_ACP_NO_LOAD".into(), "1".into())],
        ..Default::default()
    })
    .await
    .expect("start sandbox-agent")
}

/// Where `scripts/setup.sh` installs the pinned agent adapters (`claude`, `claude-agent-acp`).
pub fn adapters_bin() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(huddle::sandbox_agent::process::ADAPTERS_DIR);
    assert!(
        dir.join("claude-agent-acp").exists() && dir.join("claude").exists(),
        "the pinned Claude Code adapter is not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// The real sandbox-agent with the real Claude Code adapter on its PATH, talking to `api` (a
/// scripted Anthropic API) and keeping Claude Code's state (its transcripts) in `config_dir`.
pub async fn start_sandbox_agent_with_claude(
    api: &str,
    config_dir: &std::path::Path,
) -> SandboxAgentProcess {
    start_sandbox_agent_with_adapters(
        &[
            ("ANTHROPIC_BASE_URL", api),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("CLAUDE_CONFIG_DIR", config_dir.to_str().unwrap()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            // Claude Code refuses to start as root unless told, in exactly these words, that it runs
            // in a sandbox.
            ("IS_SANDBOX", "1"),
        ],
        None,
    )
    .await
}

/// A sandbox-agent that runs the pinned real agents of `tools/`, with this environment.
async fn start_sandbox_agent_with_adapters(
    env: &[(&str, &str)],
    port: Option<u16>,
) -> SandboxAgentProcess {
    SandboxAgentProcess::start(ProcessOptions {
        bin: Some(sandbox_agent_bin()),
        port,
        extra_path: vec![adapters_bin()],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
    .expect("start sandbox-agent")
}

/// The same, with the real Codex (codex-acp and the `codex` CLI pinned in `tools/`), its home
/// (config and sessions) in `codex_home`, pointed at a scripted OpenAI API by that config; on
/// `port` when given (a sandbox host restarted where it was).
pub async fn start_sandbox_agent_with_codex(
    codex_home: &std::path::Path,
    port: Option<u16>,
) -> SandboxAgentProcess {
    start_sandbox_agent_with_adapters(
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("CODEX_HOME", codex_home.to_str().unwrap()),
        ],
        port,
    )
    .await
}

pub fn client(process: &SandboxAgentProcess, pool: &PgPool) -> SandboxAgent {
    SandboxAgent::new(
        process.endpoint().clone(),
        Arc::new(PostgresPersist::new(pool.clone())),
    )
}

pub fn notices() -> (mpsc::Sender<SessionNotice>, mpsc::Receiver<SessionNotice>) {
    mpsc::channel(4096)
}

/// Everything noticed so far, without waiting.
pub fn drain(rx: &mut mpsc::Receiver<SessionNotice>) -> Vec<SessionNotice> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push(n);
    }
    out
}

/// Waits for a notice that matches, returning everything received up to and including it.
pub async fn wait_for(
    rx: &mut mpsc::Receiver<SessionNotice>,
    what: &str,
    mut pred: impl FnMut(&SessionNotice) -> bool,
) -> Vec<SessionNotice> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {seen:#?}"))
            .expect("notices closed");
        let hit = pred(&n);
        seen.push(n);
        if hit {
            return seen;
        }
    }
}

/// The text of an agent_message_chunk update, if the notice is one.
pub fn chunk_text(n: &SessionNotice) -> Option<String> {
    match n {
        SessionNotice::Event(e) => {
            let u = e.payload.get("params")?.get("update")?;
            (u.get("sessionUpdate")?.as_str()? == "agent_message_chunk")
                .then(|| u.get("content")?.get("text")?.as_str().map(str::to_string))
                .flatten()
        }
        _ => None,
    }
}

pub fn update_kind(n: &SessionNotice) -> Option<String> {
    match n {
        SessionNotice::Event(e) => e
            .payload
            .get("params")?
            .get("update")?
            .get("sessionUpdate")?
            .as_str()
            .map(str::to_string),
        _ => None,
    }
}

/// Huddle itself, served in-process on a free port against the given database and sandbox-agent.
pub struct TestApp {
    pub base: String,
    pub state: huddle::server::AppState,
    /// Sends the operator's token unless a request sets its own.
    pub http: reqwest::Client,
    /// Sends no identity.
    pub anon: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    /// API tokens of the bots that stand for test users, by (workspace, user).
    tokens: tokio::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// The operator's bearer token in in-process tests.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The secret of the sign-in link in in-process tests.
pub const SIGN_IN_SECRET: &str = "test-sign-in";

/// A client that calls as the operator unless a request says otherwise.
pub fn operator_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer test-admin-token"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .read_timeout(READ_TIMEOUT)
        .build()
        .unwrap()
}

/// A test's request fails, naming itself, rather than hang the suite (streams send a keep-alive
/// every 15 s).
pub const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// A client with no identity.
pub fn anon_client() -> reqwest::Client {
    reqwest::Client::builder()
        .read_timeout(READ_TIMEOUT)
        .build()
        .unwrap()
}

/// Agents on one sandbox host: the test's own sandbox-agent (whose agents it can see end).
pub fn on_host(sa: &SandboxAgentProcess) -> huddle::server::SandboxConfig {
    let endpoint = sa.endpoint();
    huddle::server::SandboxConfig {
        local: None,
        hosts: vec![huddle::sandbox::hosts::HostConfig {
            url: endpoint.base_url.clone(),
            token: endpoint.token.clone(),
            cwd_root: Some(
                std::env::temp_dir()
                    .join("huddle-host-ws")
                    .display()
                    .to_string(),
            ),
            agents: endpoint.agents.clone(),
        }],
    }
}

pub async fn spawn_app(pool: &PgPool, sa: &SandboxAgentProcess, idle: Duration) -> TestApp {
    // The tests prompt far faster than people do; the limits have their own test.
    let limits = huddle::limits::Limits {
        prompts_per_minute: 10_000,
        max_queue: 1_000,
        max_streams_per_ip: 10_000,
        max_streams_per_person: 1_000,
    };
    spawn_app_with_limits(pool, sa, idle, limits).await
}

pub async fn spawn_app_with_limits(
    pool: &PgPool,
    sa: &SandboxAgentProcess,
    idle: Duration,
    limits: huddle::limits::Limits,
) -> TestApp {
    spawn_app_configured(pool, sa, idle, limits, None).await
}

/// Limits high enough not to matter.
pub fn loose_limits() -> huddle::limits::Limits {
    huddle::limits::Limits {
        prompts_per_minute: 10_000,
        max_queue: 1_000,
        max_streams_per_ip: 10_000,
        max_streams_per_person: 1_000,
    }
}

pub async fn spawn_app_configured(
    pool: &PgPool,
    sa: &SandboxAgentProcess,
    idle: Duration,
    limits: huddle::limits::Limits,
    projects_root: Option<PathBuf>,
) -> TestApp {
    // One per database, as one per data directory in production: an app restarted on the same
    // database finds its workspaces' directories again (agents keep state by directory).
    let workspaces_dir = std::env::temp_dir().join(format!(
        "huddle-ws-{}",
        pool.connect_options().get_database().unwrap_or("default")
    ));
    spawn_app_on(
        pool,
        on_host(sa),
        idle,
        limits,
        projects_root,
        workspaces_dir,
    )
    .await
}

/// Local sandboxes (bubblewrap, as Huddle runs by default) under `data_dir`, with the scripted
/// agent and the pinned real ones on their PATH, and these variables allowed in.
pub async fn local_sandboxes(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> huddle::server::SandboxConfig {
    use huddle::sandbox::limits::{CgroupSupport, SandboxLimits};
    use huddle::sandbox::local::{Isolation, LocalProvider};
    let bin = std::fs::canonicalize(sandbox_agent_bin()).unwrap();
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(huddle::sandbox_agent::process::ADAPTERS_DIR);
    huddle::server::SandboxConfig {
        local: Some(LocalProvider {
            isolation: Isolation::bubblewrap(None)
                .await
                .expect("bubblewrap makes sandboxes here (scripts/setup.sh installs it)"),
            sandbox_agent_bin: bin,
            extra_path: vec![fixtures_bin(), std::fs::canonicalize(tools).unwrap()],
            agent_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir: data_dir.join("sandboxes"),
            cgroups: CgroupSupport::detect(),
            limits: SandboxLimits {
                pids: 256,
                memory: 1024 * 1024 * 1024,
            },
        }),
        hosts: Vec::new(),
    }
}

/// The app with a local bubblewrap sandbox per workspace, under `data`.
pub async fn spawn_sandboxed(
    pool: &PgPool,
    data: &std::path::Path,
    env: &[(&str, &str)],
    projects_root: Option<PathBuf>,
) -> TestApp {
    spawn_app_on(
        pool,
        local_sandboxes(data, env).await,
        Duration::from_secs(3600),
        loose_limits(),
        projects_root,
        data.join("workspaces"),
    )
    .await
}

/// The app with agents where `sandboxes` says.
/// With `HUDDLE_TEST_LOG=<file>`, the in-process servers of the tests log there (all tests of the
/// binary into one file, each line naming its thread): for finding what a stuck test waits on.
fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(path) = std::env::var("HUDDLE_TEST_LOG") else {
            return;
        };
        let file = std::fs::File::create(path).expect("the test log");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,tower_http=debug".into()),
            )
            .with_thread_names(true)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    });
}

/// A room as most tests start: a fresh database, the mock agents' sandbox-agent, Huddle (rooms
/// sleep after `idle`), a `pi` workspace, and ada's stream of it.
pub async fn pi_room(idle: Duration) -> (PgPool, SandboxAgentProcess, TestApp, String, Sse) {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let app = spawn_app(&pool, &sa, idle).await;
    let ws = app.create("pi").await;
    let sse = app.events(&ws, "ada", None).await;
    (pool, sa, app, ws, sse)
}

pub async fn spawn_app_on(
    pool: &PgPool,
    sandboxes: huddle::server::SandboxConfig,
    idle: Duration,
    limits: huddle::limits::Limits,
    projects_root: Option<PathBuf>,
    workspaces_dir: PathBuf,
) -> TestApp {
    test_log();
    // The assets `cargo leptos` copies into the site (no test needs the built ones).
    let options = leptos::config::LeptosOptions::builder()
        .output_name("huddle")
        .site_root("public")
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let app_options = huddle::server::AppOptions {
        idle_sleep: idle,
        allowed_hosts: huddle::server::allowed_hosts(None, addr),
        workspaces_dir,
        limits,
        base_url: base.clone(),
        admin_token: Some(ADMIN_TOKEN.into()),
        sign_in_secret: Some(SIGN_IN_SECRET.into()),
        projects_root,
        // The tests' push service and webhook receivers are local ones.
        push_allow_http: true,
        outbound_allow_private: true,
        node_url: Some(base.clone()),
        trusted_proxies: Vec::new(),
    };
    let app = huddle::server::build_app(pool.clone(), options, sandboxes, app_options);
    let shutdown = app.state.shutdown().clone();
    let server = tokio::spawn(async move {
        huddle::server::serve_http(listener, app.router, shutdown)
            .await
            .unwrap();
    });
    TestApp {
        base,
        state: app.state,
        http: operator_client(),
        anon: anon_client(),
        server,
        tokens: Default::default(),
    }
}

impl TestApp {
    /// Posts to `/api/workspace/{endpoint}`: as the test user named by the body's `userId` (a bot
    /// with its own API token, named by `displayName`), else as the operator.
    pub async fn post(&self, endpoint: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let token = match (body["workspaceId"].as_str(), body["userId"].as_str()) {
            (Some(ws), Some(user)) => {
                let name = body["displayName"].as_str().unwrap_or(user);
                self.token_named(ws, user, name).await
            }
            _ => ADMIN_TOKEN.to_string(),
        };
        self.post_as(&token, endpoint, body).await
    }

    /// Posts to `/api/workspace/{endpoint}` with a bearer token.
    pub async fn post_as(
        &self,
        token: &str,
        endpoint: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .http
            .post(format!("{}/api/workspace/{endpoint}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// The API token of a test user in a workspace (a member bot named after them).
    pub async fn token(&self, ws: &str, user: &str) -> String {
        self.token_named(ws, user, user).await
    }

    pub async fn token_named(&self, ws: &str, user: &str, name: &str) -> String {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&(ws.to_string(), user.to_string())) {
            return t.clone();
        }
        let (status, body) = self
            .post_as(
                ADMIN_TOKEN,
                "tokens/create",
                serde_json::json!({"workspaceId": ws, "name": name, "role": "member"}),
            )
            .await;
        assert_eq!(status, 200, "token for {user}: {body}");
        let token = body["token"].as_str().unwrap().to_string();
        tokens.insert((ws.to_string(), user.to_string()), token.clone());
        token
    }

    /// A GET of the room's stream as a test user.
    pub async fn events_request(&self, ws: &str, user: &str) -> reqwest::RequestBuilder {
        let token = self.token(ws, user).await;
        self.http
            .get(format!("{}/api/workspace/{ws}/events", self.base))
            .bearer_auth(token)
    }

    pub async fn create(&self, agent: &str) -> String {
        let (status, body) = self
            .post("create", serde_json::json!({"agent": agent}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["workspaceId"].as_str().unwrap().to_string()
    }

    pub async fn prompt(&self, ws: &str, user: &str, text: &str) -> i64 {
        let (status, body) = self
            .post("prompt", serde_json::json!({"workspaceId": ws, "userId": user, "displayName": user, "text": text}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["seq"].as_i64().unwrap()
    }

    pub async fn events(&self, ws: &str, user: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = self.events_request(ws, user).await;
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        Sse::from_response(res)
    }

    /// The status a new SSE request to the room gets.
    pub async fn events_status(&self, ws: &str) -> u16 {
        let url = format!("{}/api/workspace/{ws}/events", self.base);
        self.http
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Stops the server and its actors, as a process exit would.
    pub async fn stop(self) {
        self.state.shutdown().cancel();
        self.state.registry().shutdown().await;
        let _ = self.server.await;
    }
}

type EventStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A room's SSE stream, read as room-log entries.
pub struct Sse {
    stream: EventStream,
    /// The thread-list pulses seen so far (skipped by [`Sse::next`]).
    pub pulses: Vec<huddle::model::ThreadPulse>,
}

impl Sse {
    pub fn from_response(res: reqwest::Response) -> Self {
        Sse {
            stream: Box::pin(eventsource_stream::Eventsource::eventsource(
                res.bytes_stream(),
            )),
            pulses: Vec::new(),
        }
    }

    /// The next room-log entry (typing and online signals are skipped).
    pub async fn next(&mut self) -> huddle::model::RoomEntry {
        use futures::StreamExt;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), self.stream.next())
                .await
                .expect("an SSE event within 30 s")
                .expect("the stream is open")
                .expect("a well-formed SSE event");
            if matches!(ev.event.as_str(), "typing" | "online" | "reset") {
                continue;
            }
            if ev.event == "thread" {
                self.pulses
                    .push(serde_json::from_str(&ev.data).expect("a thread pulse"));
                continue;
            }
            let entry: huddle::model::RoomEntry = serde_json::from_str(&ev.data).expect("an entry");
            assert_eq!(ev.id, entry.seq.to_string());
            assert_eq!(ev.event, entry.event.kind());
            return entry;
        }
    }

    /// The data of the first event named `event` whose data satisfies `pred`.
    pub async fn raw_until(&mut self, event: &str, pred: impl Fn(&str) -> bool) -> String {
        use futures::StreamExt;
        loop {
            let ev = self
                .stream
                .next()
                .await
                .expect("the stream is open")
                .expect("a well-formed SSE event");
            if ev.event == event && pred(&ev.data) {
                return ev.data;
            }
        }
    }

    /// Waits for the stream to end (entries meanwhile are skipped).
    pub async fn closed(&mut self) {
        use futures::StreamExt;
        while let Some(Ok(_)) = self.stream.next().await {}
    }

    /// Entries up to and including the first that matches.
    pub async fn until(
        &mut self,
        mut pred: impl FnMut(&huddle::model::RoomEntry) -> bool,
    ) -> Vec<huddle::model::RoomEntry> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let hit = pred(&e);
            out.push(e);
            if hit {
                return out;
            }
        }
    }

    /// Entries up to and including seq `upto`.
    pub async fn upto(&mut self, upto: i64) -> Vec<huddle::model::RoomEntry> {
        self.until(|e| e.seq >= upto).await
    }
}

/// The text of a room entry that is an agent's (or user's) content chunk.
pub fn entry_text(e: &huddle::model::RoomEntry) -> Option<String> {
    match &e.event {
        huddle::model::RoomEvent::SessionEvent(ev) => ev
            .payload
            .pointer("/params/update/content/text")?
            .as_str()
            .map(str::to_string),
        _ => None,
    }
}

/// The text of an agent message chunk.
pub fn agent_said(e: &huddle::model::RoomEntry) -> Option<String> {
    match &e.event {
        huddle::model::RoomEvent::SessionEvent(ev) => {
            let u = &ev.payload["params"]["update"];
            (u["sessionUpdate"] == "agent_message_chunk")
                .then(|| u["content"]["text"].as_str().unwrap_or("").into())
        }
        _ => None,
    }
}

pub fn is_turn_end(e: &huddle::model::RoomEntry) -> bool {
    matches!(e.event, huddle::model::RoomEvent::TurnEnded { .. })
}

/// Starts a prompt and lets it run while the test goes on.
pub fn prompt_in_background(
    session: &Arc<huddle::sandbox_agent::Session>,
    text: &'static str,
) -> tokio::task::JoinHandle<Result<huddle::sandbox_agent::TurnEnd, huddle::sandbox_agent::AcpError>>
{
    let session = session.clone();
    tokio::spawn(async move { session.prompt(text).await })
}

/// A fresh database, the real sandbox-agent, and a session `id` with the scripted agent on them.
pub struct Scripted {
    pub pool: PgPool,
    pub sa: SandboxAgentProcess,
    pub client: SandboxAgent,
    pub session: Arc<huddle::sandbox_agent::Session>,
    pub rx: mpsc::Receiver<SessionNotice>,
}

pub async fn scripted_session(id: &str) -> Scripted {
    let (pool, _) = fresh_db().await;
    let sa = start_sandbox_agent(None, None).await;
    let client = client(&sa, &pool);
    let (tx, rx) = notices();
    let request = huddle::sandbox_agent::CreateSessionRequest {
        id: id.into(),
        agent: "pi".into(),
        cwd: Some("/tmp".into()),
        sandbox_id: None,
        options: Default::default(),
        fork_of: None,
    };
    let session = Arc::new(client.create_session(request, tx).await.unwrap());
    Scripted {
        pool,
        sa,
        client,
        session,
        rx,
    }
}

/// The id of a workspace's first thread (its conversation from before threads).
pub async fn first_thread(pool: &sqlx::PgPool, ws: &str) -> String {
    huddle::store::threads::first(pool, ws)
        .await
        .unwrap()
        .expect("the workspace has a first thread")
        .id
}

/// Now, in milliseconds since the epoch (as entries' `createdAt`), for the benchmarks.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The `p` quantile (0..1) of sorted figures; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A process's resident memory, in KiB.
pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run in a child before it starts: the usual CPU priority (a benchmark's load generator runs
/// below it, standing for clients on other machines). Where it may not be raised, it stays.
pub fn normal_priority() -> std::io::Result<()> {
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 0) };
    Ok(())
}

/// A Huddle node (the binary this build made) for the benchmarks: its own data directory and
/// log file, the scripted agent on its PATH, limits that never hold a benchmark back; up once it
/// answers its health check.
pub struct BenchNode {
    pub child: tokio::process::Child,
    pub port: u16,
    pub base: String,
    pub data: PathBuf,
}

impl BenchNode {
    pub async fn start(db_url: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let data = std::env::temp_dir().join(format!("huddle-bench-node-{port}"));
        let log = std::fs::File::create(data.with_extension("log")).expect("the node's log");
        let path = format!(
            "{}:{}",
            fixtures_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_huddle"));
        // At the usual priority, whatever the load generator that starts it runs at.
        unsafe { cmd.pre_exec(normal_priority) };
        cmd.env("DATABASE_URL", db_url)
            .env("HUDDLE_ADDR", format!("127.0.0.1:{port}"))
            .env("HUDDLE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HUDDLE_DATA_DIR", &data)
            // Thousands of clients on one address, and prompts as fast as a benchmark sends them.
            .env("HUDDLE_MAX_STREAMS_PER_IP", "100000")
            .env("HUDDLE_MAX_STREAMS_PER_PERSON", "100000")
            .env("HUDDLE_PROMPTS_PER_MINUTE", "100000")
            .env("HUDDLE_MAX_QUEUE", "100000")
            .env("LEPTOS_OUTPUT_NAME", "huddle")
            .env("RUST_LOG", "warn")
            .env("PATH", path)
            .env_remove("SANDBOX_AGENT_URL")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::from(log))
            .kill_on_drop(true);
        let node = Self {
            child: cmd.spawn().expect("start huddle"),
            port,
            base: format!("http://127.0.0.1:{port}"),
            data,
        };
        wait_up(&reqwest::Client::new(), &node.base).await;
        node
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.child.id().unwrap())
    }

    /// SIGTERM, as an operator stops it; waits for it to exit (30 s at most).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// Posts to `/api/workspace/{endpoint}` as the operator; panics unless it succeeds.
    pub async fn post(&self, endpoint: &str, body: serde_json::Value) -> serde_json::Value {
        let res = reqwest::Client::new()
            .post(format!("{}/api/workspace/{endpoint}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{endpoint}: {}", res.status());
        res.json().await.unwrap()
    }
}
