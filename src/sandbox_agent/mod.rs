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
pub use persist::{ListPage, PersistError, PostgresPersist, SessionPersistDriver};
pub use records::{Sender, SessionEvent, SessionRecord, now_ms, random_id};
pub use transport::Endpoint;
