//! Room events (messages, turns, the queue, presence, notices) into rows.

use super::acp::permission_view;
use super::*;
use crate::model::{NoticeLevel, RoomEntry, RoomEvent};

impl Fold {
    pub(super) fn system(&mut self, e: &RoomEntry, level: NoticeLevel, text: String) {
        self.push(format!("s{}", e.seq), e, View::System { level, text });
    }

    pub(super) fn end_turn(&mut self, e: &RoomEntry) {
        self.end_segment(e);
        self.plan = None;
    }

    /// Something other than text comes next (a thought, a tool call, a plan, a question): the text
    /// so far is a finished segment, rendered once, and later text starts a new one below. So the
    /// room shows what the agent did in the order it did it.
    pub(super) fn end_segment(&mut self, e: &RoomEntry) {
        if let Some(i) = self.agent.take()
            && let View::Agent { done, .. } = self.touch(i, e)
        {
            *done = true;
        }
        self.thought = None;
    }

    pub(super) fn entry(&mut self, e: &RoomEntry) {
        match &e.event {
            RoomEvent::ChatUser { user_id, display_name, text, team_only, images, mentions, .. } => {
                self.chats.insert(e.seq, (display_name.clone(), text.clone()));
                let view = View::Chat {
                    user_id: user_id.clone(),
                    display_name: display_name.clone(),
                    text: text.clone(),
                    team_only: *team_only,
                    images: images.clone(),
                    mentions: mentions.clone(),
                };
                self.push(format!("c{}", e.seq), e, view);
            }
            RoomEvent::SessionEvent(ev) => self.session_event(e, ev.sender, &ev.payload),
            RoomEvent::PromptQueued { prompt_seq, user_id, display_name, .. } => {
                let text = self.chats.get(prompt_seq).map(|c| c.1.clone()).unwrap_or_default();
                self.queue.push(Waiting {
                    seq: *prompt_seq,
                    user_id: user_id.clone(),
                    display_name: display_name.clone(),
                    text,
                });
            }
            RoomEvent::TurnStarted { prompt_seq, display_name, .. } => {
                self.end_turn(e);
                self.queue.retain(|w| w.seq != *prompt_seq);
                self.running = Some(RunningTurn {
                    prompt_seq: *prompt_seq,
                    display_name: display_name.clone(),
                    started_at: e.created_at,
                });
            }
            RoomEvent::QueueCleared { display_name, prompt_seqs, .. } => {
                self.queue.retain(|w| !prompt_seqs.contains(&w.seq));
                let n = prompt_seqs.len();
                self.system(
                    e,
                    NoticeLevel::Info,
                    format!("{display_name} cleared the queue: {n} prompt(s) will not run."),
                );
            }
            RoomEvent::PromptRemoved { prompt_seq, display_name, .. } => {
                self.queue.retain(|w| w.seq != *prompt_seq);
                self.system(e, NoticeLevel::Info, format!("{display_name} removed a waiting prompt."));
            }
            RoomEvent::TurnCancelling { display_name, .. } => {
                self.system(e, NoticeLevel::Info, format!("{display_name} stopped the agent."));
            }
            RoomEvent::TurnEnded { stop_reason, error, .. } => {
                self.end_turn(e);
                self.running = None;
                match (stop_reason.as_deref(), error) {
                    (_, Some(err)) => self.system(e, NoticeLevel::Error, err.clone()),
                    (Some("end_turn"), None) => {}
                    (Some("cancelled"), None) => self.system(e, NoticeLevel::Info, "The turn was cancelled.".into()),
                    (Some(reason), None) => {
                        self.system(e, NoticeLevel::Info, format!("The turn ended: {}.", reason.replace('_', " ")))
                    }
                    (None, None) => {}
                }
            }
            RoomEvent::PermissionRequested { request_id, request } => {
                self.end_segment(e);
                let mut view = permission_view(request_id, request);
                if let Some(dir) = &self.cwd {
                    crate::paths::make_relative(&mut view.title, dir);
                    view.text.iter_mut().for_each(|t| crate::paths::make_relative(t, dir));
                }
                let i = self.push(format!("p{}", e.seq), e, View::Permission(view));
                self.permissions.insert(request_id.clone(), i);
            }
            RoomEvent::PermissionAnswered { request_id, option_id, display_name, .. } => {
                if let Some(&i) = self.permissions.get(request_id)
                    && let View::Permission(p) = self.touch(i, e)
                {
                    let name = p.options.iter().find(|o| &o.id == option_id).map(|o| o.name.clone());
                    p.answered = Some((display_name.clone(), name.unwrap_or_else(|| option_id.clone())));
                }
            }
            RoomEvent::PermissionCancelled { request_ids } => {
                for id in request_ids {
                    if let Some(&i) = self.permissions.get(id)
                        && let View::Permission(p) = self.touch(i, e)
                    {
                        p.cancelled = true;
                    }
                }
            }
            RoomEvent::SessionRestored { replayed_events, full_memory } => self.system(
                e,
                NoticeLevel::Info,
                if *full_memory {
                    "The agent's session was restored (full memory).".to_string()
                } else {
                    format!(
                        "The agent's session was restored (last {replayed_events} events replayed: it may not remember earlier work)."
                    )
                },
            ),
            RoomEvent::Presence { user_id, display_name, online } => {
                if !*online {
                    self.present.remove(user_id);
                    self.system(e, NoticeLevel::Info, format!("{display_name} left."));
                    self.left.insert(user_id.clone(), (self.items.len() - 1, e.created_at));
                    return;
                }
                if !self.present.insert(user_id.clone()) {
                    return;
                }
                match self.left.remove(user_id) {
                    Some((i, at)) if e.created_at - at < RECONNECT_WINDOW_MS => {
                        if let View::System { text, .. } = self.touch(i, e) {
                            *text = format!("{display_name} reconnected.");
                        }
                    }
                    _ => self.system(e, NoticeLevel::Info, format!("{display_name} joined.")),
                }
            }
            RoomEvent::Notice { level, message } => self.system(e, *level, message.clone()),
            RoomEvent::WorkspaceRenamed { display_name, name, .. } => {
                self.name = Some(name.clone());
                self.system(e, NoticeLevel::Info, format!("{display_name} renamed the workspace to “{name}”."));
            }
            RoomEvent::ThreadForked { display_name, from_title, seq, method, .. } => {
                let how = match method {
                    crate::model::ForkMethod::Session => "the agent forked its own session",
                    crate::model::ForkMethod::Transcript => {
                        "the agent gets the conversation as context with the first prompt"
                    }
                };
                self.system(
                    e,
                    NoticeLevel::Info,
                    format!("{display_name} continued “{from_title}” here from row {seq}: {how}."),
                );
            }
        }
    }
}
