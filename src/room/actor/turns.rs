//! Prompts, the queue and the turn state machine, and the agent session they run on. Every agent
//! call runs in a task; its result comes back to the actor as a message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Actor, Internal, Then};
use crate::model::{ImageRef, Member, NoticeLevel, QueuedPrompt, RoomEvent};
use crate::room::handle::{Reply, RoomError};
use crate::sandbox_agent::{
    AcpError, ChosenOptions, CreateSessionRequest, PromptBlock, Session, TurnEnd, now_ms,
};

/// How long Stop may take to reach the agent.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may take to change an option.
const OPTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent session of the room.
pub(super) enum SessionSlot {
    /// None yet; `failed` when the last try to start one failed.
    Idle {
        failed: bool,
    },
    /// Being started or restored by a task.
    Connecting,
    Ready(Arc<Session>),
}

pub(super) struct Running {
    pub prompt: QueuedPrompt,
    pub sending: Sending,
    /// Stop was asked: a prompt that has not gone out yet never does.
    pub stop_asked: bool,
    /// The connection it went out on, and its request id there (known once it is sent).
    pub connection: Option<String>,
    pub rpc_id: Option<u64>,
}

/// Where the running turn's prompt is on its way to the agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Sending {
    /// The agent's session is still starting.
    Waiting,
    /// A task has it, and sends it once the state naming its connection is kept.
    Held,
    /// It went to the agent (or, after a restart, went before it).
    Out,
}

#[derive(Default)]
pub(super) struct Turns {
    pub queue: VecDeque<QueuedPrompt>,
    pub running: Option<Running>,
    /// The newest prompt recorded in the room log that this state accounts for.
    pub last_prompt_seq: i64,
    /// Team-only messages since the last prompt went out ("Name: text").
    pub team_notes: Vec<String>,
    /// A forked thread's conversation up to where it was continued: its first prompt carries it.
    pub fork_context: Option<String>,
    /// The agent's session to fork this thread's first one from (see [`RoomState::fork_session`]).
    pub fork_session: Option<String>,
    /// The agent's options as the room chose them, shared with the session that applies them.
    pub options: ChosenOptions,
}

impl Turns {
    /// Nothing running, nothing waiting.
    pub(super) fn is_quiet(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }
}

impl Actor {
    /// Starts (or restores) the session in a task unless it is live or on its way.
    pub(super) fn ensure_session(&mut self) {
        if !matches!(self.session, SessionSlot::Idle { .. }) {
            return;
        }
        self.session = SessionSlot::Connecting;
        let cwd = self.working_dir();
        let request = CreateSessionRequest {
            id: self.thread.session_id.clone(),
            agent: self.thread.agent.clone(),
            cwd: Some(cwd.display().to_string()),
            sandbox_id: Some(self.row.sandbox_id.clone()),
            options: self.turns.options.clone(),
            fork_of: self.turns.fork_session.clone(),
        };
        let sandbox = self.sandbox.clone();
        let notices = self.notices.clone();
        let internal = self.internal.clone();
        let picked_under = self
            .row
            .working_dir
            .is_some()
            .then(|| self.registry.projects_root().map(|r| r.to_path_buf()));
        tokio::spawn(async move {
            // A directory the owner picked must still be under the projects root: it may have
            // been swapped for a link to elsewhere since.
            if let Some(root) = picked_under
                && !still_under(&cwd, root.as_deref()).await
            {
                let _ = internal.send(Internal::SessionReady(Err(AcpError::Invalid(
                    OUTSIDE_ROOT.into(),
                ))));
                return;
            }
            // The sandbox makes the working directory when it starts.
            let result = match sandbox.client().await {
                Ok(client) => client
                    .resume_or_create_session(request, notices)
                    .await
                    .map(Arc::new),
                Err(e) => Err(e),
            };
            let _ = internal.send(Internal::SessionReady(result));
        });
    }

    pub(super) fn session_ready(&mut self, result: Result<Arc<Session>, AcpError>) {
        match result {
            Ok(session) => {
                self.registry
                    .learn_fork(&self.thread.agent, session.can_fork());
                // A forked thread's first session: the agent has the conversation itself, or it
                // goes with the first prompt as context.
                if self.turns.fork_session.take().is_some() {
                    if session.forked() {
                        self.turns.fork_context = None;
                    } else {
                        self.notice(
                            NoticeLevel::Warning,
                            "The agent could not fork its own session: it gets the conversation as context with the first prompt instead.",
                        );
                    }
                    self.write(Vec::new(), true);
                }
                self.session = SessionSlot::Ready(session);
                self.send_running_prompt();
            }
            Err(e) => {
                tracing::error!(thread = %self.thread.id, error = %e, "could not start the agent session");
                self.session = SessionSlot::Idle { failed: true };
                let hint = match &e {
                    AcpError::Invalid(why) if why == OUTSIDE_ROOT => Some(OUTSIDE_ROOT),
                    _ => start_hint(&self.thread.agent),
                }
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
                self.notice(
                    NoticeLevel::Error,
                    format!(
                        "The agent could not be started{hint}; it will be tried again on the next prompt."
                    ),
                );
                if let Some(running) = &self.turns.running
                    && running.sending == Sending::Waiting
                {
                    let seq = running.prompt.seq;
                    self.turn_done(
                        seq,
                        Err(AcpError::Unreachable(
                            "the agent session could not be started".into(),
                        )),
                    );
                }
            }
        }
    }

    /// A person's prompt: recorded first, then run or queued (see [`Actor::prompt_recorded`]).
    pub(super) fn prompt(
        &mut self,
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<ImageRef>,
        mentions: Vec<crate::model::Mention>,
        reply: Reply<i64>,
    ) {
        if !team_only && let Some(host) = self.host_down() {
            let _ = reply.send(Err(RoomError::HostUnreachable(host)));
            return;
        }
        let max = self.registry.max_queue();
        if !team_only && self.turns.running.is_some() && self.turns.queue.len() >= max {
            let _ = reply.send(Err(RoomError::QueueFull(max)));
            return;
        }
        if !images.is_empty() {
            let refused = if team_only {
                Some("Images go to the agent: send them with a prompt, not for the team only.")
            } else if matches!(&self.session, SessionSlot::Ready(s) if !s.takes_images()) {
                Some("This agent does not take images; send the prompt without them.")
            } else {
                None
            };
            if let Some(message) = refused {
                let _ = reply.send(Err(RoomError::Invalid(message.into())));
                return;
            }
        }
        let chat = RoomEvent::ChatUser {
            user_id: member.user_id.clone(),
            display_name: member.display_name.clone(),
            text: text.clone(),
            created_at: now_ms(),
            team_only,
            images: images.clone(),
            mentions,
        };
        self.write_for(
            chat,
            Then::Prompt {
                member,
                text,
                team_only,
                images,
                reply,
            },
        );
    }

    pub(super) fn prompt_recorded(
        &mut self,
        seq: i64,
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<ImageRef>,
        reply: Reply<i64>,
    ) {
        let _ = reply.send(Ok(seq));
        if team_only {
            // Kept (with the room's state) until the next prompt carries it to the agent.
            self.turns
                .team_notes
                .push(format!("{}: {text}", member.display_name));
            self.write(Vec::new(), true);
            return;
        }
        self.turns.last_prompt_seq = self.turns.last_prompt_seq.max(seq);
        self.enqueue(QueuedPrompt {
            seq,
            user_id: member.user_id,
            display_name: member.display_name,
            text,
            images,
        });
    }

    /// Runs the prompt now, or queues it behind the running turn.
    pub(super) fn enqueue(&mut self, prompt: QueuedPrompt) {
        if self.turns.running.is_some() {
            let event = RoomEvent::PromptQueued {
                prompt_seq: prompt.seq,
                user_id: prompt.user_id.clone(),
                display_name: prompt.display_name.clone(),
                position: self.turns.queue.len() + 1,
            };
            self.turns.queue.push_back(prompt);
            self.write(vec![event], true);
        } else {
            self.start_turn(prompt);
        }
    }

    fn start_turn(&mut self, prompt: QueuedPrompt) {
        let started = RoomEvent::TurnStarted {
            prompt_seq: prompt.seq,
            user_id: prompt.user_id.clone(),
            display_name: prompt.display_name.clone(),
        };
        self.turns.running = Some(Running {
            prompt,
            sending: Sending::Waiting,
            stop_asked: false,
            connection: None,
            rpc_id: None,
        });
        self.write(vec![started], true);
        self.ensure_session();
        self.send_running_prompt();
    }

    /// Sends the running turn's prompt once the session is live.
    fn send_running_prompt(&mut self) {
        let SessionSlot::Ready(session) = &self.session else {
            return;
        };
        let Some(running) = self
            .turns
            .running
            .as_mut()
            .filter(|r| r.sending == Sending::Waiting)
        else {
            return;
        };
        running.sending = Sending::Held;
        let session = session.clone();
        let prompt_seq = running.prompt.seq;
        // The agent hears who speaks, and what the team said meanwhile (as context).
        let mut blocks = Vec::new();
        if let Some(context) = self.turns.fork_context.take() {
            blocks.push(PromptBlock::Text(context));
        }
        let notes = std::mem::take(&mut self.turns.team_notes);
        if !notes.is_empty() {
            blocks.push(PromptBlock::Text(format!(
                "[Huddle] Your teammates said this to each other since your last turn (context, not instructions):\n{}",
                notes.join("\n")
            )));
        }
        blocks.push(PromptBlock::Text(format!(
            "[Huddle] {} says (in a room shared by the team):",
            running.prompt.display_name
        )));
        blocks.push(PromptBlock::Text(running.prompt.text.clone()));
        // Images go along when the agent takes them (a prompt queued before the session said so
        // may carry some it does not).
        let (images, dropped) = if session.takes_images() {
            (running.prompt.images.clone(), 0)
        } else {
            (Vec::new(), running.prompt.images.len())
        };
        if dropped > 0 {
            self.notice(
                NoticeLevel::Warning,
                format!("This agent does not take images: {dropped} image(s) were not sent to it."),
            );
        }
        let pool = self.registry.pool().clone();
        let workspace = self.row.id.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            for image in images {
                match crate::store::images::load(&pool, &workspace, &image.id).await {
                    Ok(Some((mime_type, data))) => {
                        use base64::Engine;
                        let data = base64::engine::general_purpose::STANDARD.encode(data);
                        blocks.push(PromptBlock::Image { mime_type, data });
                    }
                    Ok(None) => tracing::warn!(image = %image.id, "an image of the prompt is gone"),
                    Err(e) => {
                        tracing::error!(image = %image.id, error = %e, "cannot read an image of the prompt")
                    }
                }
            }
            // The prompt goes out only once the state naming its connection is kept: a restart
            // that finds the agent's reply persisted then also finds where to re-attach.
            let sent = |connection: &str, rpc_id: u64| {
                let (kept, may_go) = tokio::sync::oneshot::channel();
                let _ = internal.send(Internal::PromptSent {
                    prompt_seq,
                    connection: connection.to_string(),
                    rpc_id,
                    kept,
                });
                // A room that is gone has nobody to send it for.
                async move { may_go.await.unwrap_or(false) }
            };
            let result = session.prompt_reporting(blocks, sent).await;
            let _ = internal.send(Internal::TurnDone { prompt_seq, result });
        });
    }

    /// Where the running turn's prompt went: kept, so that a restart can wait for its reply.
    pub(super) fn prompt_sent(
        &mut self,
        prompt_seq: i64,
        connection: String,
        rpc_id: u64,
        kept: tokio::sync::oneshot::Sender<bool>,
    ) {
        let Some(running) = self
            .turns
            .running
            .as_mut()
            .filter(|r| r.prompt.seq == prompt_seq && !r.stop_asked)
        else {
            // Stopped (or ended) before it went: it never does.
            let _ = kept.send(false);
            return;
        };
        running.connection = Some(connection);
        running.rpc_id = Some(rpc_id);
        self.log.send(super::Job {
            events: Vec::new(),
            state: Some(self.state()),
            then: Some(Then::StateKept { prompt_seq, kept }),
            urgent: false,
        });
    }

    /// The state naming where the prompt goes is kept (or could not be): it goes, unless Stop
    /// was asked meanwhile.
    pub(super) fn let_prompt_go(
        &mut self,
        prompt_seq: i64,
        kept: tokio::sync::oneshot::Sender<bool>,
    ) {
        let running = self
            .turns
            .running
            .as_mut()
            .filter(|r| r.prompt.seq == prompt_seq && !r.stop_asked);
        let go = running.is_some();
        if let Some(running) = running {
            running.sending = Sending::Out;
        }
        let _ = kept.send(go);
    }

    pub(super) fn turn_done(&mut self, prompt_seq: i64, result: Result<TurnEnd, AcpError>) {
        if self
            .turns
            .running
            .as_ref()
            .is_none_or(|r| r.prompt.seq != prompt_seq)
        {
            return; // A turn already ended (interrupted at recovery, or failed at session start).
        }
        self.turns.running = None;
        let ended = match result {
            Ok(end) => RoomEvent::TurnEnded {
                prompt_seq,
                stop_reason: Some(end.stop_reason),
                error: None,
            },
            Err(e) => {
                tracing::warn!(thread = %self.thread.id, error = %e, "turn failed");
                // The connection, or the sandbox's server, is gone: the next prompt restores the
                // session on a new connection (starting the sandbox again if it stopped).
                if e.is_gone() || matches!(e, AcpError::Unreachable(_)) {
                    self.session = SessionSlot::Idle { failed: false };
                }
                let message = match e {
                    AcpError::ConnectionGone(_) | AcpError::UnknownConnection(_) => {
                        "The connection to the agent was lost during this turn."
                    }
                    AcpError::Unreachable(_) | AcpError::Timeout => {
                        "The agent could not be reached."
                    }
                    AcpError::Rpc { .. } => "The agent reported an error.",
                    _ => "The turn failed.",
                };
                RoomEvent::TurnEnded {
                    prompt_seq,
                    stop_reason: None,
                    error: Some(message.into()),
                }
            }
        };
        let next = self.turns.queue.pop_front();
        if next.is_none() {
            self.write(vec![ended], true);
            return;
        }
        self.write(vec![ended], false);
        if let Some(next) = next {
            self.start_turn(next);
        }
    }

    /// Changes an option of the agent's session (mode, model) for the whole room.
    pub(super) fn set_option(
        &mut self,
        member: Member,
        config_id: String,
        value: String,
        reply: Reply<()>,
    ) {
        let session = match &self.session {
            SessionSlot::Ready(session) => session.clone(),
            // Kept for the session about to open, which sets it (a refusal is told to the room).
            SessionSlot::Idle { .. } => {
                self.turns
                    .options
                    .lock()
                    .expect("options lock")
                    .insert(config_id.clone(), value.clone());
                self.option_set(member, config_id, value, reply, Ok(()));
                self.ensure_session();
                return;
            }
            SessionSlot::Connecting => {
                let _ = reply.send(Err(RoomError::Conflict(
                    "The agent's session is opening: choose again in a moment.".into(),
                )));
                return;
            }
        };
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result =
                match tokio::time::timeout(OPTION_TIMEOUT, session.set_option(&config_id, &value))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(AcpError::Timeout),
                };
            let _ = internal.send(Internal::OptionSet {
                member,
                config_id,
                value,
                reply,
                result,
            });
        });
    }

    /// The agent took the change (its answer, recorded, carries the options as they are now).
    pub(super) fn option_set(
        &mut self,
        member: Member,
        config_id: String,
        value: String,
        reply: Reply<()>,
        result: Result<(), AcpError>,
    ) {
        match result {
            Ok(()) => {
                let notice = RoomEvent::Notice {
                    level: NoticeLevel::Info,
                    message: format!(
                        "{} set the agent's {} to {value}.",
                        member.display_name,
                        option_name(&config_id)
                    ),
                };
                // Kept with the room's state: sessions opened later get it again.
                self.write(vec![notice], true);
                let _ = reply.send(Ok(()));
            }
            Err(AcpError::Rpc { message, .. }) => {
                let _ = reply.send(Err(RoomError::Invalid(format!(
                    "The agent refused the change: {}",
                    message.chars().take(200).collect::<String>()
                ))));
            }
            Err(e) => {
                let _ = reply.send(Err(RoomError::Agent(e)));
            }
        }
    }

    /// Takes a waiting prompt off the queue (recorded with the queue it leaves).
    pub(super) fn remove_queued(
        &mut self,
        member: Member,
        prompt_seq: i64,
        any: bool,
        reply: Reply<()>,
    ) {
        let Some(at) = self.turns.queue.iter().position(|p| p.seq == prompt_seq) else {
            let _ = reply.send(Err(RoomError::Conflict(
                "That prompt is not waiting any more.".into(),
            )));
            return;
        };
        if !any && self.turns.queue[at].user_id != member.user_id {
            let _ = reply.send(Err(RoomError::Forbidden(
                "Only the workspace's owner or the prompt's author may remove it.".into(),
            )));
            return;
        }
        self.turns.queue.remove(at);
        let removed = RoomEvent::PromptRemoved {
            prompt_seq,
            user_id: member.user_id,
            display_name: member.display_name,
        };
        self.write(vec![removed], true);
        let _ = reply.send(Ok(()));
    }

    /// Stop: recorded first, then sent to the agent; the session lives on.
    pub(super) fn cancel(&mut self, member: Member, clear_queue: bool, reply: Reply<()>) {
        if self.turns.running.is_none() {
            let _ = reply.send(Err(RoomError::Conflict("No turn is running.".into())));
            return;
        }
        // At once, not once recorded: a prompt still on its way must not go out after this.
        if let Some(running) = self.turns.running.as_mut() {
            running.stop_asked = true;
        }
        if clear_queue && !self.turns.queue.is_empty() {
            let prompt_seqs = self.turns.queue.drain(..).map(|p| p.seq).collect();
            let cleared = RoomEvent::QueueCleared {
                user_id: member.user_id.clone(),
                display_name: member.display_name.clone(),
                prompt_seqs,
            };
            self.write(vec![cleared], true);
        }
        let event = RoomEvent::TurnCancelling {
            user_id: member.user_id,
            display_name: member.display_name,
        };
        self.write_for(event, Then::Cancel { reply });
    }

    pub(super) fn cancel_recorded(&mut self, reply: Reply<()>) {
        let Some(running) = &self.turns.running else {
            // The turn ended while Stop was being recorded.
            let _ = reply.send(Ok(()));
            return;
        };
        match &self.session {
            // Held back: its task ends the turn, as cancelled, without the agent.
            _ if running.sending == Sending::Held => drop(reply.send(Ok(()))),
            SessionSlot::Ready(session) if running.sending == Sending::Out => {
                let session = session.clone();
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(CANCEL_TIMEOUT, session.cancel()).await
                    {
                        Ok(r) => r.map_err(RoomError::Agent),
                        Err(_) => Err(RoomError::Agent(AcpError::Timeout)),
                    };
                    let _ = reply.send(result);
                });
            }
            // Not sent yet: the turn ends here, as cancelled, without the agent.
            _ => {
                let seq = running.prompt.seq;
                let _ = reply.send(Ok(()));
                self.turn_done(
                    seq,
                    Ok(TurnEnd {
                        stop_reason: "cancelled".into(),
                    }),
                );
            }
        }
    }
}

const OUTSIDE_ROOT: &str =
    "the workspace's directory is no longer a directory under the projects root";

/// Whether `dir`, with every link resolved, is a directory under `root` (not the root itself).
async fn still_under(dir: &std::path::Path, root: Option<&std::path::Path>) -> bool {
    let Some(root) = root else { return false };
    let (Ok(dir), Ok(root)) = (
        tokio::fs::canonicalize(dir).await,
        tokio::fs::canonicalize(root).await,
    ) else {
        return false;
    };
    let is_dir = tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir());
    is_dir && dir.starts_with(&root) && dir != root
}

/// How the room names an option: the legacy mode list is the mode.
pub(super) fn option_name(config_id: &str) -> &str {
    if config_id == crate::sandbox_agent::LEGACY_MODE {
        "mode"
    } else {
        config_id
    }
}

/// What an operator can do about an agent that does not start, when it is known: Claude Code
/// refuses to run as root unless `IS_SANDBOX` is exactly `1` (and says only "Query closed").
fn start_hint(agent: &str) -> Option<&'static str> {
    claude_root_hint(
        agent,
        nix::unistd::geteuid().is_root(),
        std::env::var("IS_SANDBOX").ok().as_deref(),
    )
}

fn claude_root_hint(agent: &str, root: bool, is_sandbox: Option<&str>) -> Option<&'static str> {
    (agent == "claude" && root && is_sandbox != Some("1"))
        .then_some("as root, Claude Code starts only when Huddle runs with IS_SANDBOX=1")
}

#[cfg(test)]
mod tests {
    use super::claude_root_hint;

    #[test]
    fn claude_as_root_needs_is_sandbox_exactly_1() {
        assert!(claude_root_hint("claude", true, Some("yes")).is_some());
        assert!(claude_root_hint("claude", true, None).is_some());
        assert!(claude_root_hint("claude", true, Some("1")).is_none());
        assert!(claude_root_hint("claude", false, None).is_none());
        assert!(claude_root_hint("codex", true, None).is_none());
    }
}
