//! Waking a room: what the last run left in Postgres (the head of the log, the running turn, the
//! queue, open permission requests), and carrying it on. A turn that was running when Huddle
//! stopped cannot be picked up again: it ends with a visible "interrupted" entry, its permission
//! requests show as cancelled, its agent connection is closed, and the queue runs on in order.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::actor::Actor;
use crate::model::{NoticeLevel, QueuedPrompt, RoomEvent};
use crate::store::room_state::{self, RoomState};
use crate::store::{StoreError, room_log};

/// How long waking may wait for Postgres before the callers are told it is unavailable.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct Boot {
    pub head: i64,
    state: RoomState,
    /// Prompts recorded after the state was last written: they were never queued.
    late: Vec<QueuedPrompt>,
}

impl Boot {
    pub(super) async fn load(
        pool: &PgPool,
        workspace_id: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, StoreError> {
        let load = async {
            let mut delays = crate::retry::delays();
            loop {
                match Self::load_once(pool, workspace_id).await {
                    Err(e) if e.is_transient() => {
                        tracing::warn!(workspace = %workspace_id, error = %e, "cannot read the room; retrying");
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

    async fn load_once(pool: &PgPool, workspace_id: &str) -> Result<Self, StoreError> {
        let head = room_log::head(pool, workspace_id).await?;
        let state = room_state::load(pool, workspace_id).await?;
        let known = |seq: i64| {
            state.running.as_ref().is_some_and(|r| r.seq == seq)
                || state.queue.iter().any(|q| q.seq == seq)
        };
        let late = room_log::prompts_after(pool, workspace_id, state.last_prompt_seq)
            .await?
            .into_iter()
            .filter(|e| !known(e.seq))
            .filter_map(|e| match e.event {
                RoomEvent::ChatUser {
                    user_id,
                    display_name,
                    text,
                    ..
                } => Some(QueuedPrompt {
                    seq: e.seq,
                    user_id,
                    display_name,
                    text,
                }),
                _ => None,
            })
            .collect();
        Ok(Self { head, state, late })
    }
}

impl Actor {
    /// Carries on what the last run left: ends an interrupted turn visibly, then runs the queue.
    pub(super) fn recover(&mut self, boot: Boot) {
        let Boot { state, late, .. } = boot;
        self.turns.last_prompt_seq = state
            .last_prompt_seq
            .max(late.iter().map(|p| p.seq).max().unwrap_or(0));
        self.turns.queue = state.queue.into_iter().chain(late).collect();
        let mut events = Vec::new();
        if !state.open_permissions.is_empty() {
            events.push(RoomEvent::PermissionCancelled {
                request_ids: state.open_permissions,
            });
        }
        if let Some(prompt) = state.running {
            tracing::warn!(workspace = %self.row.id, prompt = prompt.seq, "a turn was interrupted by a restart");
            events.push(RoomEvent::TurnEnded {
                prompt_seq: prompt.seq,
                stop_reason: None,
                error: Some("Interrupted: Huddle restarted while this turn was running.".into()),
            });
            if let Some(connection) = state.connection {
                // Its agent may still be running on sandbox-agent: close that connection.
                let sandbox = self.registry.sandbox().clone();
                tokio::spawn(async move {
                    if let Err(e) = sandbox.close_connection(&connection).await {
                        tracing::warn!(%connection, error = %e, "could not close the interrupted turn's connection");
                    }
                });
            }
        }
        let recovered = !events.is_empty() || !self.turns.queue.is_empty();
        if !events.is_empty() {
            self.write(events, false);
        }
        if !self.turns.queue.is_empty() {
            self.notice(
                NoticeLevel::Info,
                format!(
                    "{} queued prompt(s) carried over from before the restart.",
                    self.turns.queue.len()
                ),
            );
        }
        if let Some(next) = self.turns.queue.pop_front() {
            self.enqueue(next);
        } else if recovered {
            self.write(Vec::new(), true);
        }
    }
}
