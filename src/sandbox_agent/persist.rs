//! Where sessions and their events are kept: the SDK's SessionPersistDriver, and its Postgres
//! implementation on the `sandbox_agent` schema.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use std::sync::Arc;

use super::records::{Sender, SessionEvent, SessionRecord};
use crate::store::jsonb;

pub const DEFAULT_LIST_LIMIT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("invalid cursor `{0}`")]
    Cursor(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The lease the writes were made under is gone: another node carries the session on.
    #[error("the workspace's lease is held by another node now")]
    NotOwner,
}

/// The workspace lease a session's writes are made under: a node that lost it (cut off from
/// Postgres while another took the workspace over) writes nothing of the session once it is back.
#[derive(Debug, Clone)]
pub struct Fence {
    pub workspace_id: String,
    pub held: crate::store::leases::Held,
}

impl PersistError {
    /// Whether trying again later may succeed (see [`crate::store::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, PersistError::Db(e) if crate::store::is_transient(e))
    }
}

/// One page of a listing; `next_cursor` is set when there is more.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait SessionPersistDriver: Send + Sync + 'static {
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, PersistError>;
    /// Sessions by creation time, then id.
    async fn list_sessions(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage<SessionRecord>, PersistError>;
    /// Inserts or replaces a session record.
    async fn update_session(&self, session: &SessionRecord) -> Result<(), PersistError>;
    /// A session's events in index order, after the cursor (an event index).
    async fn list_events(
        &self,
        session_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage<SessionEvent>, PersistError>;
    async fn insert_event(&self, event: &SessionEvent) -> Result<(), PersistError> {
        self.insert_events(std::slice::from_ref(event)).await
    }
    /// Inserts events atomically (one statement for a batch).
    async fn insert_events(&self, events: &[SessionEvent]) -> Result<(), PersistError>;
    /// Inserts events and, in the same transaction, records that the stream of `cursor.0` (a
    /// connection id) has been persisted up to SSE id `cursor.1`.
    async fn insert_events_at(
        &self,
        events: &[SessionEvent],
        cursor: Option<(&str, u64)>,
    ) -> Result<(), PersistError> {
        let _ = cursor;
        self.insert_events(events).await
    }
    /// The SSE id up to which a connection's stream was persisted.
    async fn stream_cursor(&self, connection_id: &str) -> Result<Option<u64>, PersistError> {
        let _ = connection_id;
        Ok(None)
    }
    /// The highest event index of a session, from the index (no scan).
    async fn max_event_index(&self, session_id: &str) -> Result<Option<i64>, PersistError>;
    /// What the agent answered to `initialize` on a connection (its capabilities), for a session
    /// re-attached to that connection by a new process.
    async fn initialized(
        &self,
        session_id: &str,
        connection_id: &str,
    ) -> Result<Option<Value>, PersistError> {
        let _ = (session_id, connection_id);
        Ok(None)
    }
    /// The agent's answer to request `rpc_id` of a connection, when it was recorded: a process
    /// that re-attaches to a turn whose answer was read (and the stream's cursor moved past it)
    /// by a process that stopped before it ended the turn must not wait for it on the stream.
    async fn reply_to(
        &self,
        session_id: &str,
        connection_id: &str,
        rpc_id: u64,
    ) -> Result<Option<Value>, PersistError> {
        let _ = (session_id, connection_id, rpc_id);
        Ok(None)
    }
    /// The last `limit` events of a session, oldest first.
    async fn last_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, PersistError>;
    /// The same store, whose event writes also check, in their own transaction, that `fence`
    /// still holds.
    fn fenced(&self, fence: Fence) -> Arc<dyn SessionPersistDriver>;
}

#[derive(Clone)]
pub struct PostgresPersist {
    pool: PgPool,
    fence: Option<Arc<Fence>>,
}

impl PostgresPersist {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, fence: None }
    }

    async fn insert_batch(
        &self,
        events: &[SessionEvent],
        wrap_all: bool,
        cursor: Option<(&str, u64)>,
    ) -> Result<(), PersistError> {
        if events.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut indexes = Vec::with_capacity(events.len());
        let mut sessions = Vec::with_capacity(events.len());
        let mut created = Vec::with_capacity(events.len());
        let mut connections = Vec::with_capacity(events.len());
        let mut senders = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for e in events {
            ids.push(e.id.clone());
            indexes.push(e.event_index);
            sessions.push(e.session_id.clone());
            created.push(e.created_at);
            connections.push(e.connection_id.clone());
            senders.push(e.sender.as_str().to_string());
            payloads.push(Json(if wrap_all {
                jsonb::wrap(&e.payload)
            } else {
                jsonb::storable(&e.payload).into_owned()
            }));
        }
        let mut tx = self.pool.begin().await?;
        if let Some(f) = &self.fence {
            crate::store::leases::fence(&mut tx, &f.workspace_id, &f.held)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Db(e) => PersistError::Db(e),
                    _ => PersistError::NotOwner,
                })?;
        }
        // A retried batch that did commit is not written twice (same ids).
        sqlx::query(
            "INSERT INTO sandbox_agent.events (id, event_index, session_id, created_at, connection_id, sender, \
             payload_json) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], \
             $6::text[], $7::jsonb[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(indexes)
        .bind(sessions)
        .bind(created)
        .bind(connections)
        .bind(senders)
        .bind(payloads)
        .execute(&mut *tx)
        .await?;
        if let Some((connection_id, last)) = cursor {
            sqlx::query(
                "INSERT INTO sandbox_agent.stream_cursors (connection_id, last_stream_id) VALUES ($1, $2) \
                 ON CONFLICT (connection_id) DO UPDATE SET last_stream_id = \
                 GREATEST(sandbox_agent.stream_cursors.last_stream_id, EXCLUDED.last_stream_id)",
            )
            .bind(connection_id)
            .bind(last as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    agent: String,
    agent_session_id: Option<String>,
    last_connection_id: String,
    created_at: i64,
    destroyed_at: Option<i64>,
    session_init_json: Option<Json<Value>>,
    sandbox_id: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> Self {
        SessionRecord {
            id: r.id,
            agent: r.agent,
            agent_session_id: r.agent_session_id,
            last_connection_id: r.last_connection_id,
            created_at: r.created_at,
            destroyed_at: r.destroyed_at,
            session_init: r.session_init_json.map(|j| jsonb::restore(j.0)),
            sandbox_id: r.sandbox_id,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    event_index: i64,
    session_id: String,
    created_at: i64,
    connection_id: String,
    sender: String,
    payload_json: Json<Value>,
}

impl TryFrom<EventRow> for SessionEvent {
    type Error = PersistError;
    fn try_from(r: EventRow) -> Result<Self, PersistError> {
        Ok(SessionEvent {
            sender: Sender::parse(&r.sender)
                .ok_or_else(|| PersistError::Corrupt(format!("sender `{}`", r.sender)))?,
            id: r.id,
            event_index: r.event_index,
            session_id: r.session_id,
            created_at: r.created_at,
            connection_id: r.connection_id,
            payload: jsonb::restore(r.payload_json.0),
        })
    }
}

const SESSION_COLUMNS: &str = "id, agent, agent_session_id, last_connection_id, created_at, destroyed_at, \
     session_init_json, sandbox_id";
const EVENT_COLUMNS: &str =
    "id, event_index, session_id, created_at, connection_id, sender, payload_json";

fn limit_of(limit: usize) -> i64 {
    if limit == 0 {
        DEFAULT_LIST_LIMIT as i64
    } else {
        limit.min(10_000) as i64
    }
}

#[async_trait]
impl SessionPersistDriver for PostgresPersist {
    fn fenced(&self, fence: Fence) -> Arc<dyn SessionPersistDriver> {
        Arc::new(Self {
            pool: self.pool.clone(),
            fence: Some(Arc::new(fence)),
        })
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, PersistError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sandbox_agent.sessions WHERE id = $1");
        let row: Option<SessionRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Into::into))
    }

    async fn list_sessions(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage<SessionRecord>, PersistError> {
        // Keyset cursor: "<createdAt>:<id>" of the last item of the previous page.
        let (after_ts, after_id) = match cursor {
            None => (i64::MIN, String::new()),
            Some(c) => {
                let (ts, id) = c
                    .split_once(':')
                    .ok_or_else(|| PersistError::Cursor(c.into()))?;
                (
                    ts.parse().map_err(|_| PersistError::Cursor(c.into()))?,
                    id.to_string(),
                )
            }
        };
        let limit = limit_of(limit);
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_agent.sessions WHERE (created_at, id) > ($1, $2) \
             ORDER BY created_at, id LIMIT $3"
        );
        let rows: Vec<SessionRow> = sqlx::query_as(&sql)
            .bind(after_ts)
            .bind(after_id)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut items: Vec<SessionRecord> = rows.into_iter().map(Into::into).collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|s| format!("{}:{}", s.created_at, s.id))
        } else {
            None
        };
        Ok(ListPage { items, next_cursor })
    }

    async fn update_session(&self, s: &SessionRecord) -> Result<(), PersistError> {
        sqlx::query(
            "INSERT INTO sandbox_agent.sessions (id, agent, agent_session_id, last_connection_id, created_at, \
             destroyed_at, session_init_json, sandbox_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET agent = EXCLUDED.agent, agent_session_id = EXCLUDED.agent_session_id, \
             last_connection_id = EXCLUDED.last_connection_id, created_at = EXCLUDED.created_at, \
             destroyed_at = EXCLUDED.destroyed_at, session_init_json = EXCLUDED.session_init_json, \
             sandbox_id = EXCLUDED.sandbox_id",
        )
        .bind(&s.id)
        .bind(&s.agent)
        .bind(&s.agent_session_id)
        .bind(&s.last_connection_id)
        .bind(s.created_at)
        .bind(s.destroyed_at)
        .bind(s.session_init.as_ref().map(|v| Json(jsonb::storable(v).into_owned())))
        .bind(&s.sandbox_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_events(
        &self,
        session_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage<SessionEvent>, PersistError> {
        let after: i64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| PersistError::Cursor(c.into()))?,
        };
        let limit = limit_of(limit);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM sandbox_agent.events WHERE session_id = $1 AND event_index > $2 \
             ORDER BY event_index LIMIT $3"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(session_id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .into_iter()
            .map(SessionEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|e| e.event_index.to_string())
        } else {
            None
        };
        Ok(ListPage { items, next_cursor })
    }

    async fn insert_events(&self, events: &[SessionEvent]) -> Result<(), PersistError> {
        self.insert_events_at(events, None).await
    }

    async fn insert_events_at(
        &self,
        events: &[SessionEvent],
        cursor: Option<(&str, u64)>,
    ) -> Result<(), PersistError> {
        match self.insert_batch(events, false, cursor).await {
            // A value jsonb refuses that the wrapper did not foresee: store every payload wrapped.
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, "session events refused; storing them wrapped");
                self.insert_batch(events, true, cursor).await
            }
            other => other,
        }
    }

    async fn stream_cursor(&self, connection_id: &str) -> Result<Option<u64>, PersistError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT last_stream_id FROM sandbox_agent.stream_cursors WHERE connection_id = $1",
        )
        .bind(connection_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0 as u64))
    }

    async fn max_event_index(&self, session_id: &str) -> Result<Option<i64>, PersistError> {
        // Served by a backward scan of the (session_id, event_index) index: one index lookup.
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT event_index FROM sandbox_agent.events WHERE session_id = $1 ORDER BY event_index DESC LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    async fn initialized(
        &self,
        session_id: &str,
        connection_id: &str,
    ) -> Result<Option<Value>, PersistError> {
        // Once per re-attach: the answer comes among a connection's first events.
        let row: Option<(Json<Value>,)> = sqlx::query_as(
            "SELECT payload_json FROM sandbox_agent.events WHERE session_id = $1 \
             AND connection_id = $2 AND sender = 'agent' \
             AND payload_json -> 'result' ? 'agentCapabilities' ORDER BY event_index LIMIT 1",
        )
        .bind(session_id)
        .bind(connection_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0.0["result"].clone()))
    }

    async fn reply_to(
        &self,
        session_id: &str,
        connection_id: &str,
        rpc_id: u64,
    ) -> Result<Option<Value>, PersistError> {
        let row: Option<(Json<Value>,)> = sqlx::query_as(
            "SELECT payload_json FROM sandbox_agent.events WHERE session_id = $1 \
             AND connection_id = $2 AND sender = 'agent' AND payload_json -> 'id' = to_jsonb($3::bigint) \
             AND NOT payload_json ? 'method' AND (payload_json ? 'result' OR payload_json ? 'error') \
             ORDER BY event_index DESC LIMIT 1",
        )
        .bind(session_id)
        .bind(connection_id)
        .bind(rpc_id as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0.0))
    }

    async fn last_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, PersistError> {
        let sql = format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM sandbox_agent.events WHERE session_id = $1 \
             ORDER BY event_index DESC LIMIT $2) AS tail ORDER BY event_index"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(session_id)
            .bind(limit_of(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(SessionEvent::try_from).collect()
    }
}
