//! The agent's permission requests: shown to everyone, answered once (the first answer wins).

use std::collections::HashMap;

use serde_json::Value;

use super::turns::SessionSlot;
use super::{Actor, Internal};
use crate::model::{Member, RoomEvent};
use crate::room::handle::{Reply, RoomError};
use crate::sandbox_agent::AcpError;
use crate::store::room_state::OpenPermission;

const MAX_KEPT: usize = 1024;

#[derive(Default)]
pub(super) struct Permissions {
    /// Requests seen while awake, with who answered them (None: still open).
    open: HashMap<String, Request>,
    /// Answers given while the room re-attaches to the agent (after a restart or a takeover):
    /// sent once it is back.
    deferred: Vec<Deferred>,
}

/// An answer waiting for the agent's connection.
pub(super) struct Deferred {
    member: Member,
    request_id: String,
    option_id: String,
    reply: Reply<()>,
}

struct Request {
    answered_by: Option<Member>,
    rpc_id: Value,
    params: Value,
}

impl Permissions {
    pub(super) fn requested(&mut self, id: String, rpc_id: Value, params: Value) {
        // Answered requests are kept so that a late second answer hears who was first; a room
        // that has answered very many forgets them (a late answer then gets "no such request").
        if self.open.len() >= MAX_KEPT {
            self.open.retain(|_, r| r.answered_by.is_none());
        }
        let request = Request {
            answered_by: None,
            rpc_id,
            params,
        };
        self.open.insert(id, request);
    }

    /// Drops requests that can no longer be answered; returns those nobody had answered.
    pub(super) fn cancelled(&mut self, ids: Vec<String>) -> Vec<String> {
        ids.into_iter()
            .filter(|id| {
                self.open
                    .remove(id)
                    .is_some_and(|r| r.answered_by.is_none())
            })
            .collect()
    }

    /// The requests nobody has answered, for the room's recoverable state.
    /// Whether a request waits for an answer.
    pub(super) fn has_open(&self) -> bool {
        self.open.values().any(|r| r.answered_by.is_none())
    }

    pub(super) fn open(&self) -> Vec<OpenPermission> {
        let mut open: Vec<OpenPermission> = self
            .open
            .iter()
            .filter(|(_, r)| r.answered_by.is_none())
            .map(|(id, r)| OpenPermission {
                id: id.clone(),
                rpc_id: r.rpc_id.clone(),
                params: r.params.clone(),
            })
            .collect();
        open.sort_by(|a, b| a.id.cmp(&b.id));
        open
    }

    /// Reinstates requests that were open before a restart.
    pub(super) fn restore(&mut self, open: Vec<OpenPermission>) {
        for p in open {
            self.requested(p.id, p.rpc_id, p.params);
        }
    }
}

impl Actor {
    pub(super) fn answer_permission(
        &mut self,
        member: Member,
        request_id: String,
        option_id: String,
        reply: Reply<()>,
    ) {
        let Some(answered) = self
            .permissions
            .open
            .get_mut(&request_id)
            .map(|r| &mut r.answered_by)
        else {
            let message = format!(
                "There is no permission request {}.",
                crate::error::quoted(&request_id)
            );
            let _ = reply.send(Err(RoomError::NotFound(message)));
            return;
        };
        if let Some(by) = answered {
            let message = format!("Already answered by {}.", by.display_name);
            let _ = reply.send(Err(RoomError::Conflict(message)));
            return;
        }
        let reattaching = matches!(self.session, SessionSlot::Connecting)
            && self
                .turns
                .running
                .as_ref()
                .is_some_and(|r| r.connection.is_some());
        let session = match &self.session {
            SessionSlot::Ready(session) => Some(session.clone()),
            _ if reattaching => None,
            _ => {
                let _ = reply.send(Err(RoomError::Conflict("The request has expired.".into())));
                return;
            }
        };
        // Taken now, so a second answer meanwhile hears who was first.
        *answered = Some(member.clone());
        let deferred = Deferred {
            member,
            request_id,
            option_id,
            reply,
        };
        match session {
            Some(session) => self.send_answer(session, deferred),
            // Sent once the agent is back.
            None => self.permissions.deferred.push(deferred),
        }
    }

    /// The room has the agent again: the answers given meanwhile go to it.
    pub(super) fn send_deferred_answers(
        &mut self,
        session: &std::sync::Arc<crate::sandbox_agent::Session>,
    ) {
        for deferred in std::mem::take(&mut self.permissions.deferred) {
            self.send_answer(session.clone(), deferred);
        }
    }

    /// The agent could not be re-attached: the answers given meanwhile come to nothing.
    pub(super) fn expire_deferred_answers(&mut self) {
        for d in std::mem::take(&mut self.permissions.deferred) {
            if let Some(r) = self.permissions.open.get_mut(&d.request_id) {
                r.answered_by = None;
            }
            let _ = d
                .reply
                .send(Err(RoomError::Conflict("The request has expired.".into())));
        }
    }

    fn send_answer(
        &mut self,
        session: std::sync::Arc<crate::sandbox_agent::Session>,
        deferred: Deferred,
    ) {
        let Deferred {
            member,
            request_id,
            option_id,
            reply,
        } = deferred;
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = session.respond_permission(&request_id, &option_id).await;
            let _ = internal.send(Internal::PermissionSent {
                request_id,
                option_id,
                member,
                reply,
                result,
            });
        });
    }

    pub(super) fn permission_sent(
        &mut self,
        request_id: String,
        option_id: String,
        member: Member,
        reply: Reply<()>,
        result: Result<(), AcpError>,
    ) {
        match result {
            Ok(()) => {
                // Kept (as answered) so that later answers hear who was first.
                let _ = reply.send(Ok(()));
                let event = RoomEvent::PermissionAnswered {
                    request_id,
                    option_id,
                    user_id: member.user_id,
                    display_name: member.display_name,
                };
                self.write(vec![event], true);
            }
            Err(e) => {
                if let Some(r) = self.permissions.open.get_mut(&request_id) {
                    r.answered_by = None;
                }
                let err = match e {
                    AcpError::Invalid(m) => RoomError::Invalid(m),
                    other => RoomError::Agent(other),
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}
