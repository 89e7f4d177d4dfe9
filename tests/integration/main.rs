//! The integration tests, in one binary: it links the crate once, not once per file. Each module
//! is a part of the mission; they share the set-up in `tests/common` and the scripted model APIs in
//! `tests/fixtures`.

#[path = "../fixtures/anthropic_api.rs"]
mod anthropic_api;
#[path = "../common/mod.rs"]
mod common;
#[path = "../fixtures/openai_api.rs"]
mod openai_api;

mod agents;
mod cluster;
mod faults;
mod identity;
mod needs_you;
mod persist;
mod process;
mod resilience;
mod sandbox_agent;
mod sandboxes;
mod security;
mod threads;
mod workspace_actor;
