//! The threads of a workspace: each its own conversation (agent session, room log, state), with
//! the name someone gave it, the agent's title for it, and how far each person has read it.

use sqlx::PgPool;
use sqlx::types::Json;

use super::StoreError;

/// A thread as the room needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: String,
    pub workspace_id: String,
    pub agent: String,
    pub session_id: String,
    pub name: Option<String>,
    pub agent_title: Option<String>,
    pub archived: bool,
    pub forked_from: Option<Json<crate::model::ForkedFrom>>,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "t.id, t.workspace_id, t.agent, t.session_id, t.name, t.agent_title, \
     t.archived, t.forked_from, (extract(epoch from t.created_at) * 1000)::bigint AS created_at_ms";

/// A thread with what the thread list shows of it for one person.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedThread {
    #[sqlx(flatten)]
    pub thread: ThreadRow,
    pub head: i64,
    pub last_activity_ms: i64,
    pub unread: i64,
}

/// What counts as unread: people's messages, the ends of turns and the agent's questions.
const UNREAD_KINDS: &str = "('chat.user', 'turn.ended', 'permission.requested', 'thread.forked')";
/// Unread counts stop here ("99+").
pub const UNREAD_CAP: i64 = 100;

pub struct NewThread<'a> {
    pub id: &'a str,
    pub workspace_id: &'a str,
    pub agent: &'a str,
    pub session_id: &'a str,
    pub name: Option<&'a str>,
    pub forked_from: Option<&'a crate::model::ForkedFrom>,
    pub created_by: Option<&'a str>,
}

pub async fn insert(tx: &mut sqlx::PgConnection, t: &NewThread<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO threads (id, workspace_id, agent, session_id, name, forked_from, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.id)
    .bind(t.workspace_id)
    .bind(t.agent)
    .bind(t.session_id)
    .bind(t.name)
    .bind(t.forked_from.map(Json))
    .bind(t.created_by)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn find(pool: &PgPool, id: &str) -> Result<Option<ThreadRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM threads t WHERE t.id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?)
}

/// A workspace's first thread: its conversation from before threads.
pub async fn first(pool: &PgPool, workspace_id: &str) -> Result<Option<ThreadRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM threads t WHERE t.workspace_id = $1 ORDER BY t.created_at, t.id LIMIT 1"
    );
    Ok(sqlx::query_as(&sql)
        .bind(workspace_id)
        .fetch_optional(pool)
        .await?)
}

/// The workspace's most recently active thread that is not archived (else its first).
pub async fn most_recent(pool: &PgPool, workspace_id: &str) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT t.id FROM threads t WHERE t.workspace_id = $1 AND NOT t.archived \
         ORDER BY COALESCE((SELECT r.created_at FROM room_log r WHERE r.thread_id = t.id \
                            ORDER BY r.seq DESC LIMIT 1), \
                           (extract(epoch from t.created_at) * 1000)::bigint) DESC LIMIT 1",
    )
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some((id,)) => Ok(Some(id)),
        None => Ok(first(pool, workspace_id).await?.map(|t| t.id)),
    }
}

/// Every thread of a workspace with its head, last activity and `person`'s unread count
/// (capped at [`UNREAD_CAP`]), most recently active first. One index lookup per thread.
pub async fn list(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
) -> Result<Vec<ListedThread>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS}, COALESCE(h.seq, 0) AS head, \
           COALESCE(h.created_at, (extract(epoch from t.created_at) * 1000)::bigint) AS last_activity_ms, \
           (SELECT count(*) FROM (SELECT 1 FROM room_log u WHERE u.thread_id = t.id \
              AND u.seq > COALESCE((SELECT seq FROM thread_reads WHERE thread_id = t.id AND person_id = $2), 0) \
              AND u.kind IN {UNREAD_KINDS} LIMIT {UNREAD_CAP}) c) AS unread \
         FROM threads t \
         LEFT JOIN LATERAL (SELECT r.seq, r.created_at FROM room_log r WHERE r.thread_id = t.id \
                            ORDER BY r.seq DESC LIMIT 1) h ON true \
         WHERE t.workspace_id = $1 ORDER BY last_activity_ms DESC, t.id"
    );
    Ok(sqlx::query_as(&sql)
        .bind(workspace_id)
        .bind(person_id)
        .fetch_all(pool)
        .await?)
}

pub async fn rename(pool: &PgPool, id: &str, name: Option<&str>) -> Result<(), StoreError> {
    sqlx::query("UPDATE threads SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_archived(pool: &PgPool, id: &str, archived: bool) -> Result<(), StoreError> {
    sqlx::query("UPDATE threads SET archived = $2 WHERE id = $1")
        .bind(id)
        .bind(archived)
        .execute(pool)
        .await?;
    Ok(())
}

/// The agent's own title for the session, as it last said it.
pub async fn set_agent_title(pool: &PgPool, id: &str, title: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE threads SET agent_title = $2 WHERE id = $1")
        .bind(id)
        .bind(title)
        .execute(pool)
        .await?;
    Ok(())
}

/// `person` has read the thread up to `seq` (read positions only move forward).
pub async fn mark_read(
    pool: &PgPool,
    thread_id: &str,
    person_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO thread_reads (thread_id, person_id, seq) VALUES ($1, $2, $3) \
         ON CONFLICT (thread_id, person_id) DO UPDATE SET seq = GREATEST(thread_reads.seq, EXCLUDED.seq)",
    )
    .bind(thread_id)
    .bind(person_id)
    .bind(seq)
    .execute(pool)
    .await?;
    Ok(())
}

/// The threads of a workspace that had something in flight (a running turn, a queue, an open
/// question) when their process stopped, else its first thread: what wakes to adopt a sandbox a
/// killed Huddle left running.
pub async fn to_wake(pool: &PgPool, workspace_id: &str) -> Result<Vec<String>, StoreError> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT thread_id FROM room_state WHERE workspace_id = $1 AND ( \
           COALESCE(state->'running', 'null'::jsonb) <> 'null'::jsonb \
           OR jsonb_array_length(COALESCE(state->'queue', '[]'::jsonb)) > 0 \
           OR jsonb_array_length(COALESCE(state->'openPermissions', '[]'::jsonb)) > 0)",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    if !ids.is_empty() {
        return Ok(ids.into_iter().map(|r| r.0).collect());
    }
    Ok(first(pool, workspace_id)
        .await?
        .map(|t| t.id)
        .into_iter()
        .collect())
}
