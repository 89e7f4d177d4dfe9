//! What a room had in flight (the running turn, the queue, open permission requests), written in
//! the same transaction as the room-log entries that change it, so a restart can pick it up.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;

use super::StoreError;
use crate::model::QueuedPrompt;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomState {
    /// The prompt whose turn is running.
    pub running: Option<QueuedPrompt>,
    /// The sandbox-agent connection the running turn was sent on, and the id of its prompt
    /// request there: a restarted process re-attaches to it and waits for that reply.
    pub connection: Option<String>,
    pub prompt_rpc_id: Option<u64>,
    pub queue: Vec<QueuedPrompt>,
    /// Permission requests nobody has answered yet.
    pub open_permissions: Vec<OpenPermission>,
    /// The newest prompt this state accounts for: prompts after it were recorded but not yet
    /// queued when the process stopped.
    pub last_prompt_seq: i64,
    /// Team-only messages the next prompt carries to the agent.
    #[serde(default)]
    pub team_notes: Vec<String>,
    /// A forked thread's conversation so far, for its first prompt to carry to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_context: Option<String>,
    /// The agent's own session a forked thread's first session is forked from (`session/fork`);
    /// where that fails, `fork_context` goes with the first prompt instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_session: Option<String>,
    /// The agent's options as the room chose them (config id -> value): every session opened
    /// later gets them again.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// An open permission request, with what it takes to answer it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPermission {
    pub id: String,
    pub rpc_id: serde_json::Value,
    pub params: serde_json::Value,
}

pub async fn load(pool: &PgPool, thread_id: &str) -> Result<RoomState, StoreError> {
    let row: Option<(Json<serde_json::Value>,)> =
        sqlx::query_as("SELECT state FROM room_state WHERE thread_id = $1")
            .bind(thread_id)
            .fetch_optional(pool)
            .await?;
    match row {
        None => Ok(RoomState::default()),
        Some((Json(v),)) => serde_json::from_value(super::jsonb::restore(v))
            .map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

/// Writes the state inside a transaction the caller commits.
pub async fn save(
    tx: &mut sqlx::PgConnection,
    workspace_id: &str,
    thread_id: &str,
    state: &RoomState,
) -> Result<(), StoreError> {
    let value = serde_json::to_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO room_state (workspace_id, thread_id, state, updated_at) VALUES ($3, $1, $2, now()) \
         ON CONFLICT (thread_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
    )
    .bind(thread_id)
    .bind(Json(super::jsonb::storable(&value).into_owned()))
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
