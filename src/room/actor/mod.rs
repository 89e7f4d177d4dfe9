//! The actor of one awake thread: the select loop and what it owns. The loop itself never
//! awaits the network or the database: room-log writes go to the writer task, agent calls run in
//! tasks, and their results come back as [`Internal`] messages.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

mod permissions;
mod recover;
mod turns;

use self::permissions::Permissions;
use self::recover::Boot;
use self::turns::{SessionSlot, Turns};
use super::handle::{Command, Live, Reply, RoomError, RoomHandle, Subscription};
use super::messages::{Internal, Then};
use super::presence::Presence;
use super::registry::{Registry, WorkspaceAwake};
use super::writer::{Job, LogWriter};
use crate::model::{Member, NoticeLevel, RoomEvent, WorkspaceInfo};
use crate::sandbox::{SandboxEvent, WorkspaceSandbox};
use crate::sandbox_agent::SessionNotice;
use crate::store::WorkspaceRow;
use crate::store::room_state::RoomState;
use crate::store::threads::ThreadRow;

/// Live entries kept for slow subscribers; one that falls further behind resyncs from Postgres.
const LIVE_BUFFER: usize = 1024;
const NOTICE_BATCH: usize = 256;
/// How long the actor's own clean-up may take when it stops (closing the agent connection,
/// flushing the writer, releasing the lease).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Actor {
    row: WorkspaceRow,
    /// The thread this actor is the room of.
    thread: ThreadRow,
    registry: Registry,
    me: RoomHandle,
    log: LogWriter,
    live: broadcast::Sender<Live>,
    internal: mpsc::UnboundedSender<Internal>,
    notices: mpsc::Sender<SessionNotice>,
    session: SessionSlot,
    turns: Turns,
    permissions: Permissions,
    presence: Presence,
    /// Where the agent runs: the workspace's sandbox, started on first need, stopped when the
    /// workspace's last awake thread sleeps.
    sandbox: Arc<WorkspaceSandbox>,
    /// The status the thread list was last told.
    pulsed: (crate::model::ThreadStatus, Option<String>),
}

/// Why the loop ended.
enum Exit {
    Sleep,
    Shutdown,
    LeaseLost,
    /// Deleted or moved: told on this once everything is stopped.
    Retire(tokio::sync::oneshot::Sender<()>),
}

impl Actor {
    /// Runs one awake period of a workspace: recovers what a previous run left in flight, then
    /// serves the mailbox until it sleeps, the server shuts down, or the lease is lost.
    pub(super) async fn run(
        row: WorkspaceRow,
        thread: ThreadRow,
        registry: Registry,
        me: RoomHandle,
        mut mailbox: mpsc::Receiver<Command>,
    ) {
        let shutdown = registry.shutdown_token();
        // The thread's previous awake period may still be closing (its agent, its writer): this
        // one starts once it has.
        let _awake = registry.awake_period(&thread.id).await;
        let workspace = match registry.join_workspace(&row).await {
            Ok(workspace) => workspace,
            Err(e) => {
                tracing::warn!(workspace = %row.id, error = %e, "the workspace could not be taken while it woke");
                let owned_elsewhere = matches!(e, RoomError::OwnedElsewhere);
                mailbox.close();
                while let Ok(cmd) = mailbox.try_recv() {
                    cmd.reject(|| match owned_elsewhere {
                        true => RoomError::OwnedElsewhere,
                        false => RoomError::DatabaseDown,
                    });
                }
                registry.forget(&thread.id, &me);
                return;
            }
        };
        let boot = match Boot::load(registry.pool(), &thread, &shutdown).await {
            Ok(boot) => boot,
            Err(e) => {
                tracing::error!(workspace = %row.id, thread = %thread.id, error = %e, "cannot wake the thread");
                mailbox.close();
                while let Ok(cmd) = mailbox.try_recv() {
                    cmd.reject(|| RoomError::DatabaseDown);
                }
                registry.forget(&thread.id, &me);
                registry.leave_workspace(&row.id, false, false).await;
                return;
            }
        };
        let (internal, mut internal_rx) = mpsc::unbounded_channel();
        let (notices, mut notices_rx) = mpsc::channel(4096);
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (log, writer) = LogWriter::spawn(
            registry.pool().clone(),
            super::RoomKey {
                workspace: row.id.clone(),
                thread: thread.id.clone(),
            },
            workspace.held.clone(),
            boot.head,
            live.clone(),
            internal.clone(),
            shutdown.clone(),
        );
        let WorkspaceAwake {
            sandbox,
            events,
            lease_lost,
            ..
        } = &*workspace;
        let mut sandbox_rx = events.subscribe();
        let lease_lost = lease_lost.clone();
        let mut actor = Actor {
            row,
            thread,
            registry: registry.clone(),
            me,
            log,
            live,
            internal,
            notices,
            session: SessionSlot::Idle { failed: false },
            turns: Turns::default(),
            permissions: Permissions::default(),
            presence: Presence::default(),
            sandbox: sandbox.clone(),
            pulsed: Default::default(),
        };
        drop(workspace);
        tracing::info!(workspace = %actor.row.id, thread = %actor.thread.id, "thread actor awake");
        actor.recover(boot);

        let idle = registry.idle_sleep();
        let mut idle_deadline = Instant::now() + idle;
        let mut buf = Vec::with_capacity(NOTICE_BATCH);
        let exit = loop {
            actor.pulse_if_changed();
            let idle_now = actor.presence.is_empty() && actor.turns.is_quiet();
            let flush_at = actor.presence.flush_at();
            let sweep_at = actor.presence.next_sweep();
            let remote_at = actor.presence.next_remote_expiry();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Exit::Shutdown,
                _ = lease_lost.cancelled() => break Exit::LeaseLost,
                Some(msg) = internal_rx.recv() => {
                    if let Internal::TurnDone { .. } = msg {
                        // What the agent said before the turn ended is in the room before its end.
                        while let Ok(n) = notices_rx.try_recv() {
                            buf.push(n);
                        }
                        if !buf.is_empty() {
                            actor.notices(std::mem::take(&mut buf));
                        }
                    }
                    if let Internal::LeaseLost = msg {
                        break Exit::LeaseLost;
                    }
                    actor.internal(msg);
                    idle_deadline = Instant::now() + idle;
                }
                Some(cmd) = mailbox.recv() => {
                    if let Command::Retire { done } = cmd {
                        break Exit::Retire(done);
                    }
                    actor.command(cmd);
                    idle_deadline = Instant::now() + idle;
                }
                Ok(event) = sandbox_rx.recv() => actor.sandbox_event(event),
                n = notices_rx.recv_many(&mut buf, NOTICE_BATCH) => {
                    if n > 0 {
                        actor.notices(std::mem::take(&mut buf));
                    }
                }
                _ = sleep_until_some(flush_at) => {
                    let online = actor.presence.flush();
                    // The nodes that follow this room show it too.
                    crate::cluster::follow::announce(
                        actor.registry.pool(),
                        &actor.thread.id,
                        crate::cluster::follow::LiveWhat::Online(online.clone()),
                    );
                    let _ = actor.live.send(Live::Online(Arc::new(online)));
                }
                _ = sleep_until_some(remote_at) => actor.presence.expire_remote(),
                _ = sleep_until_some(sweep_at) => {
                    let left = actor.presence.sweep(false);
                    actor.write(left, false);
                }
                _ = tokio::time::sleep_until(idle_deadline), if idle_now => {
                    if actor.try_sleep(&mut mailbox) {
                        break Exit::Sleep;
                    }
                    idle_deadline = Instant::now() + idle;
                }
            }
        };
        if !matches!(exit, Exit::Sleep) {
            registry.forget(&actor.thread.id, &actor.me);
            mailbox.close();
            while let Ok(cmd) = mailbox.try_recv() {
                cmd.reject(|| match exit {
                    Exit::LeaseLost => RoomError::OwnedElsewhere,
                    Exit::Retire(_) => RoomError::Deleting,
                    _ => RoomError::Stopped,
                });
            }
        }
        // A server that stops (to restart) is not its people leaving: they are back with the next
        // one, and the room shows no row for it.
        if !matches!(exit, Exit::Shutdown | Exit::Retire(_)) {
            let left = actor.presence.sweep(true);
            actor.write(left, false);
        }
        // Work in flight on a sandbox host when this node stops, or a lease another node took:
        // the agent and its turn go on for the node that takes the workspace over (it re-attaches
        // to the connection), so the connection is left open, not closed.
        let hand_over = match exit {
            Exit::LeaseLost => true,
            Exit::Shutdown => {
                actor.sandbox.summary().provider == crate::model::SandboxProvider::Remote
                    && (actor.turns.running.is_some()
                        || !actor.turns.queue.is_empty()
                        || !actor.permissions.open().is_empty())
            }
            _ => false,
        };
        let Actor {
            row,
            thread,
            session,
            log,
            sandbox,
            ..
        } = actor;
        // What the pump still sends is persisted with the session, and the next owner logs it:
        // a pump waiting on a full channel nobody reads would hold the hand-over up.
        drop(notices_rx);
        if let SessionSlot::Ready(session) = session {
            if hand_over {
                session.detach().await;
            } else {
                // Closing the connection stops the agent process; its DELETE is bounded.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close()).await;
            }
        }
        drop(log);
        if tokio::time::timeout(CLOSE_TIMEOUT, writer).await.is_err() {
            tracing::warn!(workspace = %row.id, thread = %thread.id, "room-log writer did not finish in time");
        }
        drop(sandbox);
        // The workspace's last awake thread stops its sandbox and releases its lease.
        registry
            .leave_workspace(&row.id, matches!(exit, Exit::LeaseLost), hand_over)
            .await;
        registry.pulse(
            &row.id,
            crate::model::ThreadPulse {
                thread_id: thread.id.clone(),
                status: Some(crate::model::ThreadStatus::Idle),
                started_by: None,
            },
        );
        tracing::info!(workspace = %row.id, thread = %thread.id, "thread actor asleep");
        if let Exit::Retire(done) = exit {
            let _ = done.send(());
        }
    }

    /// Falls asleep unless a call is on its way in; calls that slip in are sent to a new actor.
    fn try_sleep(&mut self, mailbox: &mut mpsc::Receiver<Command>) -> bool {
        if !self
            .registry
            .forget_if_idle(&self.thread.id, &self.me, mailbox)
        {
            return false;
        }
        while let Ok(cmd) = mailbox.try_recv() {
            cmd.reject(|| RoomError::Asleep);
        }
        true
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::WorkspaceRenamed {
                member,
                name,
                reply,
            } => {
                self.row.name = name.clone();
                let renamed = RoomEvent::WorkspaceRenamed {
                    user_id: member.user_id,
                    display_name: member.display_name,
                    name,
                };
                self.write(vec![renamed], false);
                let _ = reply.send(Ok(()));
            }
            Command::Prompt {
                member,
                text,
                team_only,
                images,
                mentions,
                reply,
            } => self.prompt(member, text, team_only, images, mentions, reply),
            Command::Cancel {
                member,
                clear_queue,
                reply,
            } => self.cancel(member, clear_queue, reply),
            Command::RemoveQueued {
                member,
                prompt_seq,
                any,
                reply,
            } => self.remove_queued(member, prompt_seq, any, reply),
            Command::SetOption {
                member,
                config_id,
                value,
                reply,
            } => self.set_option(member, config_id, value, reply),
            Command::Permission {
                member,
                request_id,
                option_id,
                reply,
            } => self.answer_permission(member, request_id, option_id, reply),
            Command::Connect { member, reply } => self.connect(member, reply),
            Command::Disconnect { conn_id } => self.presence.disconnect(conn_id),
            Command::RemoteJoin {
                member,
                token,
                reply,
            } => {
                if let Some(joined) = self.presence.join_remote(token, member) {
                    self.write(vec![joined], false);
                }
                let _ = reply.send(Ok(()));
            }
            Command::RemoteLeave { token } => self.presence.leave_remote(&token),
            Command::Typing { member } => {
                crate::cluster::follow::announce(
                    self.registry.pool(),
                    &self.thread.id,
                    crate::cluster::follow::LiveWhat::Typing(member.clone()),
                );
                let _ = self.live.send(Live::Typing(member));
            }
            Command::Renamed { user_id, name } => self.presence.renamed(&user_id, &name),
            Command::Crash => panic!("crash requested for thread {}", self.thread.id),
            Command::Notice { level, message } => self.notice(level, message),
            // The loop ends on it before it gets here.
            Command::Retire { done } => drop(done.send(())),
        }
    }

    fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Written { first_seq, then } => self.written(first_seq, then),
            Internal::WriteFailed { then } => match then {
                Then::Prompt { reply, .. } => drop(reply.send(Err(RoomError::DatabaseDown))),
                Then::Cancel { reply } => drop(reply.send(Err(RoomError::DatabaseDown))),
                // As before the state was kept first: the prompt goes out (unless stopped).
                Then::StateKept { prompt_seq, kept } => self.let_prompt_go(prompt_seq, kept),
            },
            Internal::SessionReady(result) => self.session_ready(result),
            Internal::TurnDone { prompt_seq, result } => self.turn_done(prompt_seq, result),
            Internal::PromptSent {
                prompt_seq,
                connection,
                rpc_id,
                kept,
            } => self.prompt_sent(prompt_seq, connection, rpc_id, kept),
            Internal::Reattached { prompt_seq, result } => self.reattached(prompt_seq, result),
            Internal::PermissionSent {
                request_id,
                option_id,
                member,
                reply,
                result,
            } => self.permission_sent(request_id, option_id, member, reply, result),
            Internal::OptionSet {
                member,
                config_id,
                value,
                reply,
                result,
            } => self.option_set(member, config_id, value, reply, result),
            // The loop ends on it before it gets here.
            Internal::LeaseLost => {}
        }
    }

    fn written(&mut self, first_seq: i64, then: Then) {
        match then {
            Then::Prompt {
                member,
                text,
                team_only,
                images,
                reply,
            } => self.prompt_recorded(first_seq, member, text, team_only, images, reply),
            Then::Cancel { reply } => self.cancel_recorded(reply),
            Then::StateKept { prompt_seq, kept } => self.let_prompt_go(prompt_seq, kept),
        }
    }

    pub(super) fn info(&self) -> WorkspaceInfo {
        WorkspaceInfo {
            workspace_id: self.row.id.clone(),
            thread_id: self.thread.id.clone(),
            name: self.row.name.clone(),
            sandbox_id: self.row.sandbox_id.clone(),
            sandbox: self.sandbox.summary().clone(),
            agent: self.thread.agent.clone(),
            working_dir: self.working_dir().display().to_string(),
            session_id: Some(self.thread.session_id.clone()),
            status: self.status().to_string(),
            online: self.presence.online(),
            queue: self.turns.queue.iter().cloned().collect(),
            head: self.log.head(),
        }
    }

    /// Where the agent works: the directory the owner picked, else the workspace's own.
    pub(super) fn working_dir(&self) -> std::path::PathBuf {
        self.sandbox.working_dir().to_path_buf()
    }

    /// What happened to the sandbox, said in the room.
    fn sandbox_event(&mut self, event: SandboxEvent) {
        // Whether the agent's connection is gone with it (the next prompt opens it again).
        let mut gone = true;
        let (level, message) = match event {
            SandboxEvent::HostDown(host) => {
                gone = false;
                self.sandbox.record("unreachable");
                (
                    NoticeLevel::Error,
                    format!(
                        "The sandbox host {host} is unreachable: prompts wait until it is back."
                    ),
                )
            }
            // It may have restarted, its connections gone: the session is opened again, with
            // the agent's memory.
            SandboxEvent::HostUp(host) => {
                self.sandbox.record("created");
                (
                    NoticeLevel::Info,
                    format!("The sandbox host {host} is back."),
                )
            }
            SandboxEvent::ProcessLimit(n) => (
                NoticeLevel::Error,
                format!(
                    "A command in the sandbox tried to run more than {n} processes: Huddle stopped everything in the sandbox. The next prompt starts it again."
                ),
            ),
            SandboxEvent::OutOfMemory { killed, limit } => {
                gone = false;
                (
                    NoticeLevel::Error,
                    format!(
                        "The kernel killed {killed} process(es) in the sandbox: they used more than its {} MiB of memory.",
                        limit / (1024 * 1024)
                    ),
                )
            }
            SandboxEvent::Died => (
                NoticeLevel::Warning,
                "The sandbox stopped; the next prompt starts it again.".to_string(),
            ),
        };
        if gone && matches!(self.session, SessionSlot::Ready(_)) && self.turns.running.is_none() {
            self.session = SessionSlot::Idle { failed: false };
        }
        self.notice(level, message);
    }

    /// What the thread list shows of this thread.
    fn thread_status(&self) -> (crate::model::ThreadStatus, Option<String>) {
        use crate::model::ThreadStatus;
        if self.permissions.has_open() {
            (ThreadStatus::NeedsAnswer, None)
        } else if let Some(running) = &self.turns.running {
            (
                ThreadStatus::Working,
                Some(running.prompt.display_name.clone()),
            )
        } else if matches!(self.session, SessionSlot::Idle { failed: true }) {
            (ThreadStatus::Failed, None)
        } else {
            (ThreadStatus::Idle, None)
        }
    }

    /// Tells the workspace's thread lists when this thread's status changed.
    fn pulse_if_changed(&mut self) {
        let now = self.thread_status();
        if now == self.pulsed {
            return;
        }
        self.pulsed = now.clone();
        self.registry.pulse(
            &self.row.id,
            crate::model::ThreadPulse {
                thread_id: self.thread.id.clone(),
                status: Some(now.0),
                started_by: now.1,
            },
        );
    }

    /// The agent named its session: the thread list shows it (unless someone named the thread).
    fn title_changed(&mut self, title: String) {
        if self.thread.agent_title.as_deref() == Some(title.as_str()) {
            return;
        }
        self.thread.agent_title = Some(title.clone());
        let pool = self.registry.pool().clone();
        let registry = self.registry.clone();
        let (workspace, thread) = (self.row.id.clone(), self.thread.id.clone());
        tokio::spawn(async move {
            match crate::store::threads::set_agent_title(&pool, &thread, &title).await {
                Ok(()) => registry.pulse(
                    &workspace,
                    crate::model::ThreadPulse {
                        thread_id: thread,
                        status: None,
                        started_by: None,
                    },
                ),
                Err(e) => {
                    tracing::warn!(thread = %thread, error = %e, "could not keep the session's title")
                }
            }
        });
    }

    /// The host the sandbox is on, when it cannot be reached now.
    pub(super) fn host_down(&self) -> Option<String> {
        self.sandbox.unreachable_host()
    }

    fn status(&self) -> &'static str {
        match &self.session {
            SessionSlot::Connecting => "connecting",
            SessionSlot::Idle { failed: true } => "error",
            _ if self.turns.running.is_some() => "working",
            _ => "idle",
        }
    }

    /// What a restart would need to carry on.
    pub(super) fn state(&self) -> RoomState {
        RoomState {
            running: self.turns.running.as_ref().map(|r| r.prompt.clone()),
            connection: self
                .turns
                .running
                .as_ref()
                .and_then(|r| r.connection.clone()),
            prompt_rpc_id: self.turns.running.as_ref().and_then(|r| r.rpc_id),
            queue: self.turns.queue.iter().cloned().collect(),
            open_permissions: self.permissions.open(),
            last_prompt_seq: self.turns.last_prompt_seq,
            team_notes: self.turns.team_notes.clone(),
            fork_context: self.turns.fork_context.clone(),
            fork_session: self.turns.fork_session.clone(),
            options: self.turns.options.lock().expect("options lock").clone(),
        }
    }

    /// Hands entries to the writer (agent output and the room's own notes: retried until written).
    pub(super) fn write(&self, events: Vec<RoomEvent>, with_state: bool) {
        if events.is_empty() && !with_state {
            return;
        }
        self.log.send(Job {
            events,
            state: with_state.then(|| self.state()),
            then: None,
            urgent: false,
        });
    }

    /// Hands a person's entry to the writer; `then` runs once it is in Postgres, or they are told
    /// the database is unavailable.
    pub(super) fn write_for(&self, event: RoomEvent, then: Then) {
        if self.log.failing() {
            // The writer is already retrying: say so now rather than queue behind it.
            match then {
                Then::Prompt { reply, .. } => drop(reply.send(Err(RoomError::DatabaseDown))),
                Then::Cancel { reply } => drop(reply.send(Err(RoomError::DatabaseDown))),
                // Never written this way (see `prompt_sent`); a dropped sender keeps it back.
                Then::StateKept { .. } => {}
            }
            return;
        }
        self.log.send(Job {
            events: vec![event],
            state: None,
            then: Some(then),
            urgent: true,
        });
    }

    pub(super) fn notice(&self, level: NoticeLevel, message: impl Into<String>) {
        self.write(
            vec![RoomEvent::Notice {
                level,
                message: message.into(),
            }],
            false,
        );
    }

    fn connect(&mut self, member: Option<Member>, reply: Reply<Subscription>) {
        if self.log.failing() {
            let _ = reply.send(Err(RoomError::DatabaseDown));
            return;
        }
        // Subscribe before reading the head: every entry after it is sure to come live.
        let live = self.live.subscribe();
        // A room that never had a turn opens its agent's session for the first person in it, so
        // that the agent's options and commands are there before the first prompt.
        if member.is_some() && self.turns.last_prompt_seq == 0 {
            self.ensure_session();
        } else if member.is_some() {
            // Someone is in the room: its sandbox starts now, so that the first prompt does not
            // wait for it.
            let sandbox = self.sandbox.clone();
            tokio::spawn(async move {
                let _ = sandbox.client().await;
            });
        }
        let (conn_id, joined) = self.presence.connect(member);
        if let Some(joined) = joined {
            self.write(vec![joined], false);
        }
        let sub = Subscription {
            conn_id,
            head: self.log.head(),
            live: Some(live),
            online: Some(Arc::new(self.presence.online())),
            leave: super::handle::Leave::Actor(self.me.clone()),
        };
        // A caller that gave up drops the reply, and with it the subscription: it leaves at once.
        let _ = reply.send(Ok(sub));
    }

    /// Session notices become room entries; permission requests are tracked as they pass.
    fn notices(&mut self, notices: Vec<SessionNotice>) {
        let mut events = Vec::with_capacity(notices.len());
        let mut state_changed = false;
        for notice in notices {
            match notice {
                SessionNotice::Event(e) => {
                    state_changed |= self.follow_options(&e.payload);
                    if let Some(title) = crate::sandbox_agent::session_title(&e.payload) {
                        self.title_changed(title);
                    }
                    events.push(RoomEvent::SessionEvent(e))
                }
                SessionNotice::OptionRefused { config_id, value } => {
                    self.turns
                        .options
                        .lock()
                        .expect("options lock")
                        .remove(&config_id);
                    state_changed = true;
                    events.push(RoomEvent::Notice {
                        level: NoticeLevel::Warning,
                        message: format!(
                            "The agent's new session did not take the room's {} ({value}): it uses its default.",
                            turns::option_name(&config_id)
                        ),
                    });
                }
                SessionNotice::PermissionRequested {
                    request_id,
                    rpc_id,
                    params,
                } => {
                    self.permissions
                        .requested(request_id.clone(), rpc_id, params.clone());
                    state_changed = true;
                    events.push(RoomEvent::PermissionRequested {
                        request_id,
                        request: params,
                    });
                }
                SessionNotice::PermissionsCancelled(ids) => {
                    let open = self.permissions.cancelled(ids);
                    if !open.is_empty() {
                        state_changed = true;
                        events.push(RoomEvent::PermissionCancelled { request_ids: open });
                    }
                }
                SessionNotice::Malformed(_) => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: "The agent sent something Huddle could not read; it was skipped."
                        .into(),
                }),
                SessionNotice::StreamGap {
                    last_seen,
                    resumed_at,
                } => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: format!(
                        "{} message(s) from the agent were lost while reconnecting to it.",
                        resumed_at.saturating_sub(last_seen + 1)
                    ),
                }),
                SessionNotice::StreamHealed { recovered } => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Info,
                    message: format!(
                        "The stream from the agent skipped {recovered} message(s); they were recovered."
                    ),
                }),
                SessionNotice::AgentExited => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: "The agent's process exited; the next prompt starts it again.".into(),
                }),
                SessionNotice::ConnectionLost(_) => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message:
                        "The connection to the agent was lost; the next prompt restores the session."
                            .into(),
                }),
                // Streams end so that people see the room is reconnecting, as when its own
                // log cannot be written.
                SessionNotice::StorageDown => {
                    let _ = self.live.send(Live::LogDown);
                }
                SessionNotice::Restored {
                    replayed_events,
                    full_memory,
                } => events.push(RoomEvent::SessionRestored {
                    replayed_events,
                    full_memory,
                }),
            }
        }
        self.write(events, state_changed);
    }
}

impl Actor {
    /// The agent changed an option the room chose (Claude leaves plan mode when asked to):
    /// the room's choice follows it. True when it changed.
    fn follow_options(&mut self, payload: &serde_json::Value) -> bool {
        let mut options = self.turns.options.lock().expect("options lock");
        if options.is_empty()
            || payload.get("method").and_then(serde_json::Value::as_str) != Some("session/update")
        {
            return false;
        }
        let mut changed = false;
        for (id, value) in crate::sandbox_agent::current_options(payload) {
            if let Some(chosen) = options.get_mut(&id)
                && *chosen != value
            {
                *chosen = value;
                changed = true;
            }
        }
        changed
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
