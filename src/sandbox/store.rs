//! Sandboxes and sandbox hosts in Postgres.

use sqlx::PgPool;

use crate::store::StoreError;

/// A registered host, token included (server side only).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub url: String,
    pub token: Option<String>,
    pub cwd_root: String,
}

pub async fn hosts(pool: &PgPool) -> Result<Vec<HostRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, url, token, cwd_root FROM sandbox_hosts ORDER BY created_at")
            .fetch_all(pool)
            .await?,
    )
}

/// Adds a host, or updates the token and root of the one at this URL.
pub async fn upsert_host(pool: &PgPool, host: &HostRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sandbox_hosts (id, url, token, cwd_root) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, token = EXCLUDED.token, \
         cwd_root = EXCLUDED.cwd_root",
    )
    .bind(&host.id)
    .bind(&host.url)
    .bind(&host.token)
    .bind(&host.cwd_root)
    .execute(pool)
    .await?;
    Ok(())
}

/// How many workspaces each host holds (this machine's under `None`).
pub async fn load(pool: &PgPool) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT host_id, count(*) FROM sandboxes GROUP BY host_id")
            .fetch_all(pool)
            .await?,
    )
}

/// Records what a sandbox is doing now.
pub async fn set_state(pool: &PgPool, id: &str, state: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sandboxes SET state = $2, last_seen_at = now() WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(pool)
        .await?;
    Ok(())
}

/// Places a workspace's sandbox on another host.
pub async fn move_to(pool: &PgPool, workspace_id: &str, host: &HostRow) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE sandboxes SET host_id = $2, provider = 'remote', state = 'created' \
         WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .bind(&host.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE workspaces SET sandbox_base_url = $2 WHERE id = $1")
        .bind(workspace_id)
        .bind(&host.url)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a workspace and everything of it: its log, state, images, invites, tokens and
/// memberships go with it (foreign keys), and its agent session's records.
pub async fn delete_workspace(pool: &PgPool, workspace_id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // The agent sessions of its threads (they do not reference the workspace).
    sqlx::query(
        "DELETE FROM sandbox_agent.sessions WHERE id IN \
         (SELECT session_id FROM threads WHERE workspace_id = $1)",
    )
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM workspaces WHERE id = $1")
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// The workspace a sandbox belongs to.
pub async fn workspace_of(pool: &PgPool, sandbox_id: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT workspace_id FROM sandboxes WHERE id = $1")
            .bind(sandbox_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The threads whose session's live connection is one of `server_ids` (`huddle-<agent>-<id>`), as
/// `(server id, workspace, thread)`.
pub async fn threads_of_connections(
    pool: &PgPool,
    server_ids: &[String],
) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT 'huddle-' || s.agent || '-' || s.last_connection_id, t.workspace_id, t.id \
         FROM sandbox_agent.sessions s JOIN threads t ON t.session_id = s.id \
         WHERE 'huddle-' || s.agent || '-' || s.last_connection_id = ANY($1)",
    )
    .bind(server_ids)
    .fetch_all(pool)
    .await?)
}
