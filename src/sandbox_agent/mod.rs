//! A Rust client for Sandbox Agent: ACP (JSON-RPC) over HTTP, sessions with the TypeScript SDK's
//! semantics (create, resume with replayed history, prompt, cancel, permissions, destroy), their
//! persistence, and the embedded `sandbox-agent` server process.

mod acp;
pub mod agents;
mod client;
mod connection;
mod error;
mod notice;
pub mod persist;
pub mod process;
mod records;
mod transport;

pub use acp::{LEGACY_MODE, PromptBlock, current_options, session_title};
pub use client::{
    AgentInfo, ChosenOptions, CreateSessionRequest, SandboxAgent, Session, SessionNotice, TurnEnd,
};
pub use error::{AcpError, Problem};
pub use persist::{Fence, ListPage, PersistError, PostgresPersist, SessionPersistDriver};
pub use records::{Sender, SessionEvent, SessionRecord, now_ms, random_id};
pub use transport::Endpoint;

/// Awaits `fut`, saying in the log (once, and again when it ends) if it takes longer than 10 s:
/// a step that waits on something that never comes names itself.
pub async fn watched<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let started = std::time::Instant::now();
    tokio::select! {
        out = &mut fut => return out,
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
    }
    tracing::warn!(step = what, "still waiting after 10 s");
    let out = fut.await;
    tracing::warn!(
        step = what,
        secs = started.elapsed().as_secs(),
        "done at last"
    );
    out
}
