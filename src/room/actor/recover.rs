//! Waking a room: what the last run left in Postgres (the head of the log, the running turn, the
//! queue, open permission requests), and carrying it on. A turn that was running when Huddle
//! stopped is re-attached first: sandbox-agent keeps the connection and its agent, so the stream
//! resumes after what was persisted, the turn goes on and its permission requests can still be
//! answered. Only when that is impossible does the turn end with a visible "interrupted" entry,
//! its permission requests show as cancelled, and its agent connection is closed. Either way the
//! queue runs on in order.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::turns::{Running, SessionSlot};
use super::{Actor, Internal};
use crate::model::{NoticeLevel, QueuedPrompt, RoomEvent};
use crate::sandbox_agent::{AcpError, Session};
use crate::store::room_state::{self, RoomState};
use crate::store::threads::ThreadRow;
use crate::store::{StoreError, room_log};

/// How long waking may wait for Postgres before the callers are told it is unavailable.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct Boot {
    pub head: i64,
    state: RoomState,
    /// Prompts recorded after the state was last written: they were never queued.
    late: Vec<QueuedPrompt>,
    /// What the agent sent that was persisted with its session but not yet in the room log when
    /// the last run stopped (a crash between the two writes): logged first, so nothing is lost.
    unlogged: Vec<crate::sandbox_agent::SessionEvent>,
    /// The session's connection when the last run stopped (`huddle-<agent>-<id>`): on a sandbox
    /// host, where nothing else would end its agent, a room that does not re-attach to it closes it.
    left_connection: Option<String>,
}

/// At most this many unlogged events are carried over at once (a crash leaves a handful).
const MAX_UNLOGGED: usize = 10_000;

impl Boot {
    pub(super) async fn load(
        pool: &PgPool,
        thread: &ThreadRow,
        shutdown: &CancellationToken,
    ) -> Result<Self, StoreError> {
        let load = async {
            let mut delays = crate::retry::delays();
            loop {
                match Self::load_once(pool, &thread.id, &thread.session_id).await {
                    Err(e) if e.is_transient() => {
                        tracing::warn!(thread = %thread.id, error = %e, "cannot read the room; retrying");
                        tokio::time::sleep(crate::retry::next(&mut delays)).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(LOAD_TIMEOUT, load) => r.unwrap_or_else(|_| Err(StoreError::Db(sqlx::Error::PoolTimedOut))),
            _ = shutdown.cancelled() => Err(StoreError::Db(sqlx::Error::PoolClosed)),
        }
    }

    async fn load_once(
        pool: &PgPool,
        thread_id: &str,
        session_id: &str,
    ) -> Result<Self, StoreError> {
        let head = room_log::head(pool, thread_id).await?;
        let state = room_state::load(pool, thread_id).await?;
        let known = |seq: i64| {
            state.running.as_ref().is_some_and(|r| r.seq == seq)
                || state.queue.iter().any(|q| q.seq == seq)
        };
        let late = room_log::prompts_after(pool, thread_id, state.last_prompt_seq)
            .await?
            .into_iter()
            .filter(|e| !known(e.seq))
            .filter_map(|e| match e.event {
                RoomEvent::ChatUser {
                    user_id,
                    display_name,
                    text,
                    team_only: false,
                    images,
                    ..
                } => Some(QueuedPrompt {
                    seq: e.seq,
                    user_id,
                    display_name,
                    text,
                    images,
                }),
                _ => None,
            })
            .collect();
        // The stream resumes after what was persisted with the session: what of that the room
        // log lacks would never come again.
        let logged = room_log::last_event_index(pool, thread_id).await?;
        let persist = crate::sandbox_agent::PostgresPersist::new(pool.clone());
        let unlogged = crate::sandbox_agent::SessionPersistDriver::list_events(
            &persist,
            session_id,
            Some(&logged.to_string()),
            MAX_UNLOGGED,
        )
        .await
        .map_err(|e| match e {
            crate::sandbox_agent::PersistError::Db(e) => StoreError::Db(e),
            other => StoreError::Corrupt(other.to_string()),
        })?
        .items;
        let left_connection =
            crate::sandbox_agent::SessionPersistDriver::get_session(&persist, session_id)
                .await
                .map_err(|e| match e {
                    crate::sandbox_agent::PersistError::Db(e) => StoreError::Db(e),
                    other => StoreError::Corrupt(other.to_string()),
                })?
                .filter(|r| !r.last_connection_id.is_empty())
                .map(|r| format!("huddle-{}-{}", r.agent, r.last_connection_id));
        Ok(Self {
            head,
            state,
            late,
            unlogged,
            left_connection,
        })
    }
}

impl Actor {
    /// Carries on what the last run left: re-attaches to a running turn (or ends it visibly),
    /// then runs the queue.
    pub(super) fn recover(&mut self, boot: Boot) {
        let Boot {
            state,
            late,
            unlogged,
            left_connection,
            ..
        } = boot;
        // The agent's questions among them, that nobody answered: the running turn waits on
        // them, so the room asks them (a question only recorded would be lost, and the turn with it).
        let mut state = state;
        let mut asked = Vec::new();
        if !unlogged.is_empty() {
            tracing::warn!(thread = %self.thread.id, events = unlogged.len(), "logging what the agent sent before the last run stopped");
            let unanswered = unanswered_questions(&unlogged, &state, &self.thread.agent);
            for p in &unanswered {
                asked.push(RoomEvent::PermissionRequested {
                    request_id: p.id.clone(),
                    request: p.params.clone(),
                });
            }
            state.open_permissions.extend(unanswered);
            self.write(
                unlogged
                    .into_iter()
                    .map(RoomEvent::SessionEvent)
                    .chain(asked)
                    .collect(),
                false,
            );
        }
        self.turns.last_prompt_seq = state
            .last_prompt_seq
            .max(late.iter().map(|p| p.seq).max().unwrap_or(0));
        self.turns.queue = state.queue.into_iter().chain(late).collect();
        self.turns.team_notes = state.team_notes;
        self.turns.fork_context = state.fork_context;
        self.turns.fork_session = state.fork_session;
        *self.turns.options.lock().expect("options lock") = state.options;
        let carried = self.turns.queue.len();
        if carried > 0 {
            self.notice(
                NoticeLevel::Info,
                format!("{carried} queued prompt(s) carried over from before the restart."),
            );
        }
        match (state.running, state.connection, state.prompt_rpc_id) {
            (Some(prompt), Some(connection), Some(rpc_id)) => {
                tracing::info!(thread = %self.thread.id, prompt = prompt.seq, %connection, "re-attaching to a turn that was running before a restart");
                self.permissions.restore(state.open_permissions.clone());
                self.turns.running = Some(Running {
                    prompt: prompt.clone(),
                    sending: super::turns::Sending::Out,
                    stop_asked: false,
                    connection: Some(connection.clone()),
                    rpc_id: Some(rpc_id),
                });
                self.session = SessionSlot::Connecting;
                let sandbox = self.sandbox.clone();
                let notices = self.notices.clone();
                let internal = self.internal.clone();
                let session_id = self.thread.session_id.clone();
                let options = self.turns.options.clone();
                let open = state
                    .open_permissions
                    .into_iter()
                    .map(|p| (p.id, p.rpc_id, p.params))
                    .collect();
                tokio::spawn(async move {
                    use crate::sandbox_agent::watched;
                    let result = match watched("re-attach: the sandbox", sandbox.client()).await {
                        Ok(client) => watched(
                            "re-attach: the session",
                            client.attach_session(
                                &session_id,
                                &connection,
                                rpc_id,
                                open,
                                notices,
                                options,
                            ),
                        )
                        .await
                        .map(Arc::new),
                        Err(e) => Err(e),
                    };
                    tracing::info!(prompt = prompt.seq, ok = result.is_ok(), "re-attach done");
                    let sent = internal.send(Internal::Reattached {
                        prompt_seq: prompt.seq,
                        result,
                    });
                    // The room stopped meanwhile (this node hands its workspaces over): the turn
                    // goes on for the next owner, so the connection is let go, not closed.
                    if let Err(tokio::sync::mpsc::error::SendError(Internal::Reattached {
                        result: Ok(session),
                        ..
                    })) = sent
                    {
                        session.detach().await;
                    }
                });
            }
            (running, connection, _) => {
                if connection.is_none()
                    && let Some(left) = left_connection
                {
                    self.sandbox.close_left_connection(left);
                }
                let open: Vec<String> = state.open_permissions.into_iter().map(|p| p.id).collect();
                if running.is_some() || !open.is_empty() {
                    self.interrupted(running.map(|p| p.seq), connection, open);
                }
                if let Some(next) = self.turns.queue.pop_front() {
                    self.enqueue(next);
                } else if carried > 0 {
                    self.write(Vec::new(), true);
                }
            }
        }
    }

    pub(super) fn reattached(&mut self, prompt_seq: i64, result: Result<Arc<Session>, AcpError>) {
        match result {
            Ok(session) => {
                self.session = SessionSlot::Ready(session.clone());
                self.send_deferred_answers(&session);
                self.notice(
                    NoticeLevel::Info,
                    "Huddle restarted and reconnected to the agent: the turn goes on.",
                );
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let result = session.await_turn().await;
                    let _ = internal.send(Internal::TurnDone { prompt_seq, result });
                });
            }
            Err(e) => {
                tracing::warn!(thread = %self.thread.id, error = %e, "cannot re-attach to the interrupted turn");
                self.session = SessionSlot::Idle { failed: false };
                self.expire_deferred_answers();
                let connection = self.turns.running.take().and_then(|r| r.connection);
                let open = self.permissions.open().into_iter().map(|p| p.id).collect();
                let open = self.permissions.cancelled(open);
                self.interrupted(Some(prompt_seq), connection, open);
                if let Some(next) = self.turns.queue.pop_front() {
                    self.enqueue(next);
                }
            }
        }
    }

    /// Ends a turn that cannot go on: visibly, with its permission requests cancelled and its
    /// agent connection closed (so no agent process is left behind).
    fn interrupted(
        &mut self,
        prompt_seq: Option<i64>,
        connection: Option<String>,
        open: Vec<String>,
    ) {
        let mut events = Vec::new();
        if !open.is_empty() {
            events.push(RoomEvent::PermissionCancelled { request_ids: open });
        }
        if let Some(prompt_seq) = prompt_seq {
            tracing::warn!(thread = %self.thread.id, prompt = prompt_seq, "a turn was interrupted by a restart");
            events.push(RoomEvent::TurnEnded {
                prompt_seq,
                stop_reason: None,
                error: Some("Interrupted: Huddle restarted while this turn was running.".into()),
            });
        }
        if let Some(connection) = connection {
            let sandbox = self.sandbox.clone();
            tokio::spawn(async move {
                let closed = match sandbox.client().await {
                    Ok(client) => client.close_connection(&connection).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = closed {
                    tracing::warn!(%connection, error = %e, "could not close the interrupted turn's connection");
                }
            });
        }
        self.write(events, true);
    }
}

/// The agent's permission requests among events recorded but never logged, on the running turn's
/// connection, with no answer recorded after them: what the turn still waits on.
fn unanswered_questions(
    unlogged: &[crate::sandbox_agent::SessionEvent],
    state: &crate::store::room_state::RoomState,
    agent: &str,
) -> Vec<crate::store::room_state::OpenPermission> {
    use crate::sandbox_agent::Sender;
    let Some(local) = state
        .connection
        .as_deref()
        .and_then(|c| c.strip_prefix(&format!("huddle-{agent}-")))
    else {
        return Vec::new();
    };
    let key = |id: &serde_json::Value| match id {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    unlogged
        .iter()
        .filter(|e| e.sender == Sender::Agent && e.connection_id == local)
        .filter(|e| e.payload["method"].as_str() == Some("session/request_permission"))
        .filter(|e| !e.payload["id"].is_null())
        .filter(|e| {
            !unlogged.iter().any(|a| {
                a.sender == Sender::Client
                    && a.payload.get("method").is_none()
                    && a.payload["id"] == e.payload["id"]
            })
        })
        .map(|e| crate::store::room_state::OpenPermission {
            // As the connection's pump names them: the connection makes the agent's ids unique.
            id: format!("{local}/{}", key(&e.payload["id"])),
            rpc_id: e.payload["id"].clone(),
            params: e.payload["params"].clone(),
        })
        .filter(|p| !state.open_permissions.iter().any(|o| o.id == p.id))
        .collect()
}
