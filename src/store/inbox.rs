//! What needs whom, in Postgres: the inbox rows and the outbox of webhook posts and pushes, both
//! derived from room-log entries inside the transaction that writes them, so they exist exactly
//! when the entries do (a batch written again after a lost reply adds nothing twice).

use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::model::{InboxItem, InboxKind, RoomEntry, RoomEvent};

/// The channel that tells every node a workspace's inbox rows changed (payload: its id).
pub const CHANNEL: &str = "huddle_needs_you";

/// Whether a batch holds anything an inbox, a webhook or a push cares about (most batches are the
/// agent's streamed chunks: they skip all of this).
pub fn concerns(entries: &[RoomEntry]) -> bool {
    entries.iter().any(|e| match &e.event {
        RoomEvent::ChatUser { mentions, .. } => !mentions.is_empty(),
        RoomEvent::PermissionRequested { .. }
        | RoomEvent::PermissionAnswered { .. }
        | RoomEvent::PermissionCancelled { .. }
        | RoomEvent::TurnEnded { .. } => true,
        _ => false,
    })
}

/// Inbox rows, their done marks and outbox rows for entries `seqs` of a thread, just inserted in
/// this transaction; then a notification (sent at commit).
pub async fn derive(
    tx: &mut PgConnection,
    workspace_id: &str,
    thread_id: &str,
    seqs: &[i64],
) -> Result<(), StoreError> {
    // Mentions: the people named, when they are in the workspace, but not the author.
    sqlx::query(
        "INSERT INTO inbox (person_id, workspace_id, thread_id, seq, kind, created_at) \
         SELECT DISTINCT m.person_id, r.workspace_id, r.thread_id, r.seq, 'mention', r.created_at \
         FROM room_log r CROSS JOIN LATERAL jsonb_to_recordset(r.data->'mentions') AS x(\"personId\" text) \
         JOIN memberships m ON m.workspace_id = r.workspace_id AND m.person_id = x.\"personId\" \
         WHERE r.thread_id = $1 AND r.seq = ANY($2) AND r.kind = 'chat.user' \
           AND jsonb_typeof(r.data->'mentions') = 'array' AND m.person_id <> r.data->>'userId' \
         ON CONFLICT DO NOTHING",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    // A permission request: everyone who may answer it.
    sqlx::query(
        "INSERT INTO inbox (person_id, workspace_id, thread_id, seq, kind, request_id, created_at) \
         SELECT m.person_id, r.workspace_id, r.thread_id, r.seq, 'permission', r.data->>'requestId', r.created_at \
         FROM room_log r JOIN workspaces w ON w.id = r.workspace_id \
         JOIN memberships m ON m.workspace_id = r.workspace_id \
         WHERE r.thread_id = $1 AND r.seq = ANY($2) AND r.kind = 'permission.requested' \
           AND m.role IN ('owner', 'member') AND (NOT w.approvers_only OR m.role = 'owner' OR m.approver) \
         ON CONFLICT DO NOTHING",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    // Answered or withdrawn: done for everyone.
    sqlx::query(
        "UPDATE inbox SET done = true WHERE thread_id = $1 AND kind = 'permission' AND NOT done \
         AND request_id IN ( \
           SELECT data->>'requestId' FROM room_log WHERE thread_id = $1 AND seq = ANY($2) AND kind = 'permission.answered' \
           UNION ALL \
           SELECT jsonb_array_elements_text(data->'requestIds') FROM room_log \
           WHERE thread_id = $1 AND seq = ANY($2) AND kind = 'permission.cancelled')",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    // An ended turn: for whoever prompted it, unless they stopped it themselves.
    sqlx::query(
        "INSERT INTO inbox (person_id, workspace_id, thread_id, seq, kind, created_at) \
         SELECT m.person_id, e.workspace_id, e.thread_id, e.seq, 'turn_ended', e.created_at \
         FROM room_log e \
         JOIN room_log p ON p.thread_id = e.thread_id AND p.seq = (e.data->>'promptSeq')::bigint \
         JOIN memberships m ON m.workspace_id = e.workspace_id AND m.person_id = p.data->>'userId' \
         WHERE e.thread_id = $1 AND e.seq = ANY($2) AND e.kind = 'turn.ended' \
           AND NOT EXISTS (SELECT 1 FROM room_log c WHERE c.thread_id = e.thread_id \
             AND c.seq > p.seq AND c.seq < e.seq AND c.kind = 'turn.cancelling' \
             AND c.data->>'userId' = m.person_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    // The team webhook: each permission request and each ended turn.
    sqlx::query(
        "INSERT INTO outbox (kind, workspace_id, thread_id, seq) \
         SELECT 'webhook', r.workspace_id, r.thread_id, r.seq FROM room_log r \
         JOIN workspaces w ON w.id = r.workspace_id AND w.webhook_url IS NOT NULL \
         WHERE r.thread_id = $1 AND r.seq = ANY($2) AND r.kind IN ('permission.requested', 'turn.ended') \
         ON CONFLICT DO NOTHING",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    // Pushes: a new inbox row of someone with a subscription (whether to send is decided when
    // it is sent: their settings, mutes and open tabs then).
    sqlx::query(
        "INSERT INTO outbox (kind, workspace_id, thread_id, seq, person_id) \
         SELECT 'push', i.workspace_id, i.thread_id, i.seq, i.person_id FROM inbox i \
         WHERE i.thread_id = $1 AND i.seq = ANY($2) AND NOT i.done \
           AND EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.person_id = i.person_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(thread_id)
    .bind(seqs)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    kind: String,
    workspace_id: String,
    workspace_name: String,
    thread_id: String,
    thread_title: String,
    seq: i64,
    created_at: i64,
    request_id: Option<String>,
    summary: Option<String>,
    author: Option<String>,
    request: Option<sqlx::types::Json<serde_json::Value>>,
}

/// What needs a person now, newest first: open permission requests, and ended turns and
/// mentions past where they read the thread.
pub async fn items(
    pool: &PgPool,
    person_id: &str,
    limit: i64,
) -> Result<Vec<InboxItem>, StoreError> {
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT i.kind, i.workspace_id, w.name AS workspace_name, i.thread_id, \
           COALESCE(t.name, t.agent_title, '') AS thread_title, i.seq, i.created_at, i.request_id, \
           CASE i.kind \
             WHEN 'permission' THEN COALESCE(r.data#>>'{request,toolCall,title}', 'The agent asks permission') \
             WHEN 'turn_ended' THEN COALESCE(r.data->>'stopReason', r.data->>'error') \
             ELSE left(r.data->>'text', 200) END AS summary, \
           CASE WHEN i.kind = 'mention' THEN r.data->>'displayName' END AS author, \
           CASE WHEN i.kind = 'permission' THEN r.data->'request' END AS request \
         FROM inbox i \
         JOIN workspaces w ON w.id = i.workspace_id \
         JOIN threads t ON t.id = i.thread_id \
         JOIN memberships m ON m.workspace_id = i.workspace_id AND m.person_id = i.person_id \
         LEFT JOIN room_log r ON r.thread_id = i.thread_id AND r.seq = i.seq \
         LEFT JOIN thread_reads tr ON tr.thread_id = i.thread_id AND tr.person_id = i.person_id \
         WHERE i.person_id = $1 AND NOT i.done \
           AND (i.kind = 'permission' OR i.seq > COALESCE(tr.seq, 0)) \
         ORDER BY i.created_at DESC, i.seq DESC LIMIT $2",
    )
    .bind(person_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(InboxItem {
                kind: InboxKind::parse(&r.kind)?,
                url: crate::model::row_url(&r.workspace_id, &r.thread_id, r.seq),
                workspace_id: r.workspace_id,
                workspace_name: r.workspace_name,
                thread_id: r.thread_id,
                thread_title: r.thread_title,
                seq: r.seq,
                created_at: r.created_at,
                permission: match (&r.request_id, r.request) {
                    (Some(id), Some(req)) => Some(crate::timeline::permission_of(id, &req.0)),
                    _ => None,
                },
                request_id: r.request_id,
                summary: r.summary.unwrap_or_default(),
                author: r.author,
            })
        })
        .collect())
}

/// Marks items done for a person: permission rows by hand ("not mine to answer"), the others by
/// moving the person's read mark of the thread past them.
pub async fn dismiss(
    pool: &PgPool,
    person_id: &str,
    thread_id: &str,
    seq: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE inbox SET done = true WHERE person_id = $1 AND thread_id = $2 AND seq = $3 AND NOT done",
    )
    .bind(person_id)
    .bind(thread_id)
    .bind(seq)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done > 0)
}

/// A person read a thread up to `seq`: their ended turns and mentions up to there are done.
/// True when that took something out of their inbox.
pub async fn seen(
    pool: &PgPool,
    person_id: &str,
    thread_id: &str,
    seq: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE inbox SET done = true WHERE person_id = $1 AND thread_id = $2          AND kind <> 'permission' AND NOT done AND seq <= $3",
    )
    .bind(person_id)
    .bind(thread_id)
    .bind(seq)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done > 0)
}

/// Every workspace id of a person (the inbox stream listens for these).
pub async fn workspaces_of(pool: &PgPool, person_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT workspace_id FROM memberships WHERE person_id = $1")
            .bind(person_id)
            .fetch_all(pool)
            .await?,
    )
}
