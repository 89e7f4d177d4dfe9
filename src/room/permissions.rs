//! The agent's permission requests: shown to everyone, answered once (the first answer wins).

use std::collections::HashMap;

use super::actor::{Actor, Internal};
use super::handle::{Reply, RoomError};
use super::turns::SessionSlot;
use crate::model::{Member, RoomEvent};
use crate::sandbox_agent::AcpError;

const MAX_KEPT: usize = 1024;

#[derive(Default)]
pub(super) struct Permissions {
    /// Requests seen while awake, with who answered them (None: still open).
    open: HashMap<String, Option<Member>>,
}

impl Permissions {
    pub(super) fn requested(&mut self, id: String) {
        // Answered requests are kept so that a late second answer hears who was first; a room
        // that has answered very many forgets them (a late answer then gets "no such request").
        if self.open.len() >= MAX_KEPT {
            self.open.retain(|_, by| by.is_none());
        }
        self.open.insert(id, None);
    }

    /// Drops requests that can no longer be answered; returns those nobody had answered.
    pub(super) fn cancelled(&mut self, ids: Vec<String>) -> Vec<String> {
        ids.into_iter()
            .filter(|id| matches!(self.open.remove(id), Some(None)))
            .collect()
    }

    pub(super) fn open_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .open
            .iter()
            .filter(|(_, by)| by.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
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
        let Some(answered) = self.permissions.open.get_mut(&request_id) else {
            let message = format!("There is no permission request `{request_id}`.");
            let _ = reply.send(Err(RoomError::NotFound(message)));
            return;
        };
        if let Some(by) = answered {
            let message = format!("Already answered by {}.", by.display_name);
            let _ = reply.send(Err(RoomError::Conflict(message)));
            return;
        }
        let SessionSlot::Ready(session) = &self.session else {
            let _ = reply.send(Err(RoomError::Conflict("The request has expired.".into())));
            return;
        };
        // Taken now, so a second answer meanwhile hears who was first.
        *answered = Some(member.clone());
        let session = session.clone();
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
                if let Some(by) = self.permissions.open.get_mut(&request_id) {
                    *by = None;
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
