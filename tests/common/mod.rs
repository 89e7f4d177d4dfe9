//! Shared set-up of the integration tests: a fresh database on the real test Postgres, and the real
//! sandbox-agent with the scripted agent on its PATH.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

pub fn fixtures_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin")
}

fn sandbox_agent_bin() -> PathBuf {
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
    })
    .await
    .expect("start sandbox-agent")
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
