//! The room log in Postgres: appended in batches by a room's writer, read in keyset pages by SSE
//! replays and the page's first render. Values jsonb refuses are stored in their lossless wrapper.

use sqlx::PgPool;
use sqlx::types::Json;

use super::StoreError;
use super::jsonb;
use super::room_state::{self, RoomState};
use crate::model::{RoomEntry, RoomEvent};

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    created_at: i64,
    kind: String,
    data: Json<serde_json::Value>,
}

fn decode(row: Row) -> Result<RoomEntry, StoreError> {
    let value = serde_json::json!({"kind": row.kind, "data": jsonb::restore(row.data.0)});
    let event: RoomEvent =
        serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(RoomEntry {
        seq: row.seq,
        created_at: row.created_at,
        event,
    })
}

/// Appends entries (their seqs already allocated, consecutive) in one statement, together with the
/// room's state when given. A seq already taken is left alone (`ON CONFLICT DO NOTHING`), so a
/// batch whose commit was not acknowledged can be written again safely; the rows written are
/// returned. `wrap_all` stores every entry in the lossless wrapper (a retry after Postgres refused
/// a value). With `held`, the write is fenced: it happens only while that owner holds the
/// workspace's lease at that epoch (held for the transaction), else [`StoreError::NotOwner`].
/// Each batch that adds entries notifies [`CHANNEL`] at commit with `<thread> <last seq>` (ids
/// only: the other nodes read the entries from the log, so a missed or doubled notification loses
/// or doubles nothing).
pub async fn append(
    pool: &PgPool,
    workspace_id: &str,
    thread_id: &str,
    entries: &[RoomEntry],
    state: Option<&RoomState>,
    wrap_all: bool,
    held: Option<&super::leases::Held>,
) -> Result<u64, StoreError> {
    if entries.is_empty() && state.is_none() {
        return Ok(0);
    }
    let mut seqs: Vec<i64> = Vec::with_capacity(entries.len());
    let mut kinds = Vec::with_capacity(entries.len());
    let mut datas = Vec::with_capacity(entries.len());
    let mut created = Vec::with_capacity(entries.len());
    for e in entries {
        let mut v =
            serde_json::to_value(&e.event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let data = v
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default();
        seqs.push(e.seq);
        kinds.push(e.event.kind().to_string());
        datas.push(Json(if wrap_all {
            jsonb::wrap(&data)
        } else {
            jsonb::storable(&data).into_owned()
        }));
        created.push(e.created_at);
    }
    let mut tx = pool.begin().await?;
    if let Some(held) = held {
        super::leases::fence(&mut tx, workspace_id, held).await?;
    }
    let written = sqlx::query(
        "INSERT INTO room_log (workspace_id, thread_id, seq, kind, data, created_at) \
         SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[], $5::jsonb[], $6::bigint[]) \
         ON CONFLICT (thread_id, seq) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(thread_id)
    .bind(seqs)
    .bind(kinds)
    .bind(datas)
    .bind(created)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if written > 0 && super::inbox::concerns(entries) {
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        super::inbox::derive(&mut tx, workspace_id, thread_id, &seqs).await?;
    }
    if let Some(state) = state {
        room_state::save(&mut tx, workspace_id, thread_id, state).await?;
    }
    if let Some(last) = entries.last().filter(|_| written > 0) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{thread_id} {}", last.seq))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// Where each committed batch of entries is announced to every node.
pub const CHANNEL: &str = "huddle_room_log";

/// Entries with `after < seq <= upto`, oldest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    thread_id: &str,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<RoomEntry>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, created_at, kind, data FROM room_log WHERE thread_id = $1 AND seq > $2 AND seq <= $3 \
         ORDER BY seq LIMIT $4",
    )
    .bind(thread_id)
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(decode).collect()
}

/// The `chat.user` entries after `after`: prompts recorded but maybe never queued (recovery).
pub async fn prompts_after(
    pool: &PgPool,
    thread_id: &str,
    after: i64,
) -> Result<Vec<RoomEntry>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, created_at, kind, data FROM room_log WHERE thread_id = $1 AND seq > $2 \
         AND kind = 'chat.user' ORDER BY seq",
    )
    .bind(thread_id)
    .bind(after)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(decode).collect()
}

/// The event index of the newest agent session event in the room log (0 when there is none).
pub async fn last_event_index(pool: &PgPool, thread_id: &str) -> Result<i64, StoreError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT (data->>'eventIndex')::bigint FROM room_log \
         WHERE thread_id = $1 AND kind = 'session.event' AND data ? 'eventIndex' \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| r.0).unwrap_or(0))
}

/// The newest seq of a thread (0 when the log is empty): one index lookup.
pub async fn head(pool: &PgPool, thread_id: &str) -> Result<i64, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT seq FROM room_log WHERE thread_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(thread_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| r.0).unwrap_or(0))
}
