//! Workspace actors: one task per live workspace, owning its Sandbox Agent session, its room log and
//! the broadcast to everyone connected. Callers hold a cheap handle and talk through a bounded
//! mailbox with oneshot replies. Idle actors sleep (close their connection and end) and wake on the
//! next call; a crashed actor is started again by the next call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{
    Member, NoticeLevel, QueuedPrompt, RoomEntry, RoomEvent, WorkspaceInfo, is_valid_workspace_id,
};
use crate::room_log;
use crate::sandbox_agent::{
    AcpError, CreateSessionRequest, SandboxAgent, Session, SessionNotice, TurnEnd, now_ms,
};
use crate::store::{self, StoreError, WorkspaceRow};

const MAILBOX: usize = 256;
/// Live entries kept for slow subscribers; one that falls further behind resyncs from Postgres.
const LIVE_BUFFER: usize = 1024;
const NOTICE_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("There is no workspace `{0}`.")]
    UnknownWorkspace(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the agent is unavailable: {0}")]
    Agent(#[from] AcpError),
    #[error("the workspace stopped unexpectedly; try again")]
    Stopped,
    /// The actor was falling asleep as the call came in: the call is retried on a fresh actor.
    #[error("the workspace is waking up; try again")]
    Asleep,
}

/// What an actor needs from the server.
pub struct ActorDeps {
    pub pool: PgPool,
    pub sandbox: SandboxAgent,
    /// How long an actor with nobody connected and nothing running stays awake.
    pub idle_sleep: Duration,
}

/// A live subscription to a room: entries after `head` come on `live`.
pub struct Subscription {
    pub conn_id: u64,
    pub head: i64,
    pub live: broadcast::Receiver<Live>,
    pub handle: ActorHandle,
}

/// What the broadcast carries: persisted entries, and typing signals that are not kept.
#[derive(Debug, Clone)]
pub enum Live {
    Entry(Arc<RoomEntry>),
    Typing(Member),
}

type Reply<T> = oneshot::Sender<Result<T, ActorError>>;

enum Command {
    Info(Reply<WorkspaceInfo>),
    Prompt {
        member: Member,
        text: String,
        reply: Reply<i64>,
    },
    Cancel {
        member: Member,
        reply: Reply<()>,
    },
    Permission {
        member: Member,
        request_id: String,
        option_id: String,
        reply: Reply<()>,
    },
    Connect {
        member: Member,
        reply: Reply<Subscription>,
    },
    Disconnect {
        conn_id: u64,
    },
    Typing {
        member: Member,
    },
    Crash,
}

impl Command {
    /// Answers a command the actor will not carry out.
    fn reject(self, err: impl Fn() -> ActorError) {
        match self {
            Command::Info(r) => drop(r.send(Err(err()))),
            Command::Prompt { reply, .. } => drop(reply.send(Err(err()))),
            Command::Cancel { reply, .. } => drop(reply.send(Err(err()))),
            Command::Permission { reply, .. } => drop(reply.send(Err(err()))),
            Command::Connect { reply, .. } => drop(reply.send(Err(err()))),
            Command::Disconnect { .. } | Command::Typing { .. } | Command::Crash => {}
        }
    }
}

/// A cheap handle to one workspace's actor.
#[derive(Clone)]
pub struct ActorHandle {
    tx: mpsc::Sender<Command>,
}

impl ActorHandle {
    /// Tells the actor a subscriber left (from a Drop, so it never waits).
    pub fn disconnect(&self, conn_id: u64) {
        let tx = self.tx.clone();
        if tx.try_send(Command::Disconnect { conn_id }).is_err() {
            tokio::spawn(async move {
                let _ = tx.send(Command::Disconnect { conn_id }).await;
            });
        }
    }
}

/// Finds or starts the one actor of each workspace.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    deps: ActorDeps,
    actors: Mutex<HashMap<String, ActorHandle>>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Registry {
    pub fn new(deps: ActorDeps) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                deps,
                actors: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.deps.pool
    }

    pub fn sandbox(&self) -> &SandboxAgent {
        &self.inner.deps.sandbox
    }

    /// How many actors are awake.
    pub fn awake(&self) -> usize {
        self.inner
            .actors
            .lock()
            .expect("registry lock")
            .values()
            .filter(|h| !h.tx.is_closed())
            .count()
    }

    /// The live actor of a workspace, started (woken) if needed. Unknown workspaces are refused.
    async fn handle(&self, id: &str) -> Result<ActorHandle, ActorError> {
        if !is_valid_workspace_id(id) {
            return Err(ActorError::UnknownWorkspace(id.into()));
        }
        if let Some(h) = self.live_handle(id) {
            return Ok(h);
        }
        let row = store::find_workspace(&self.inner.deps.pool, id)
            .await?
            .ok_or_else(|| ActorError::UnknownWorkspace(id.into()))?;
        let mut actors = self.inner.actors.lock().expect("registry lock");
        if let Some(h) = actors.get(id).filter(|h| !h.tx.is_closed()) {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = ActorHandle { tx };
        actors.insert(id.to_string(), handle.clone());
        let registry = self.clone();
        let me = handle.clone();
        self.inner.tasks.spawn(async move {
            let id = row.id.clone();
            // A panic stays inside this task: the others run on, and the next call starts it again.
            let result = tokio::spawn(Actor::run(row, registry.clone(), me.clone(), rx)).await;
            if let Err(e) = result {
                tracing::error!(workspace = %id, error = %e, "workspace actor crashed");
            }
            registry.forget(&id, &me);
        });
        Ok(handle)
    }

    fn live_handle(&self, id: &str) -> Option<ActorHandle> {
        self.inner
            .actors
            .lock()
            .expect("registry lock")
            .get(id)
            .filter(|h| !h.tx.is_closed())
            .cloned()
    }

    fn forget(&self, id: &str, handle: &ActorHandle) {
        let mut actors = self.inner.actors.lock().expect("registry lock");
        if actors
            .get(id)
            .is_some_and(|h| h.tx.same_channel(&handle.tx))
        {
            actors.remove(id);
        }
    }

    /// Sends a command and waits for its reply; a call that meets a sleeping actor goes to a new one.
    async fn call<T>(&self, id: &str, make: impl Fn(Reply<T>) -> Command) -> Result<T, ActorError> {
        for _ in 0..3 {
            let handle = self.handle(id).await?;
            let (tx, rx) = oneshot::channel();
            if handle.tx.send(make(tx)).await.is_err() {
                self.forget(id, &handle);
                continue;
            }
            match rx.await {
                Ok(Err(ActorError::Asleep)) => continue,
                Ok(result) => return result,
                Err(_) => return Err(ActorError::Stopped),
            }
        }
        Err(ActorError::Stopped)
    }

    pub async fn info(&self, id: &str) -> Result<WorkspaceInfo, ActorError> {
        self.call(id, Command::Info).await
    }

    pub async fn prompt(&self, id: &str, member: Member, text: String) -> Result<i64, ActorError> {
        self.call(id, |reply| Command::Prompt {
            member: member.clone(),
            text: text.clone(),
            reply,
        })
        .await
    }

    pub async fn cancel(&self, id: &str, member: Member) -> Result<(), ActorError> {
        self.call(id, |reply| Command::Cancel {
            member: member.clone(),
            reply,
        })
        .await
    }

    pub async fn answer_permission(
        &self,
        id: &str,
        member: Member,
        request_id: String,
        option_id: String,
    ) -> Result<(), ActorError> {
        self.call(id, |reply| Command::Permission {
            member: member.clone(),
            request_id: request_id.clone(),
            option_id: option_id.clone(),
            reply,
        })
        .await
    }

    pub async fn subscribe(&self, id: &str, member: Member) -> Result<Subscription, ActorError> {
        self.call(id, |reply| Command::Connect {
            member: member.clone(),
            reply,
        })
        .await
    }

    pub async fn typing(&self, id: &str, member: Member) -> Result<(), ActorError> {
        let handle = self.handle(id).await?;
        let _ = handle.tx.try_send(Command::Typing { member });
        Ok(())
    }

    /// Makes a workspace's actor panic (tests of crash isolation).
    #[doc(hidden)]
    pub async fn crash_for_tests(&self, id: &str) -> Result<(), ActorError> {
        let handle = self.handle(id).await?;
        let _ = handle.tx.send(Command::Crash).await;
        Ok(())
    }

    /// Stops every actor (closing their sessions) and waits for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// The session id of a workspace: its `default` session.
pub fn session_id_of(workspace_id: &str) -> String {
    format!("{workspace_id}/default")
}

struct PermissionState {
    answered_by: Option<Member>,
}

enum Internal {
    TurnDone {
        prompt_seq: i64,
        result: Result<TurnEnd, AcpError>,
    },
}

struct Actor {
    row: WorkspaceRow,
    registry: Registry,
    me: ActorHandle,
    session: Option<Arc<Session>>,
    status: &'static str,
    next_seq: i64,
    live: broadcast::Sender<Live>,
    queue: VecDeque<QueuedPrompt>,
    /// The room-log seq of the prompt whose turn is running.
    turn: Option<i64>,
    permissions: HashMap<String, PermissionState>,
    connections: HashMap<u64, Member>,
    next_conn: u64,
    notices_tx: mpsc::Sender<SessionNotice>,
    internal_tx: mpsc::Sender<Internal>,
}

impl Actor {
    async fn run(
        row: WorkspaceRow,
        registry: Registry,
        me: ActorHandle,
        mut mailbox: mpsc::Receiver<Command>,
    ) {
        let pool = registry.pool().clone();
        let head = loop {
            match room_log::head(&pool, &row.id).await {
                Ok(h) => break h,
                Err(e) => {
                    tracing::error!(workspace = %row.id, error = %e, "cannot read the room log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let (notices_tx, mut notices) = mpsc::channel(4096);
        let (internal_tx, mut internal) = mpsc::channel(16);
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let mut actor = Actor {
            row,
            registry: registry.clone(),
            me,
            session: None,
            status: "connecting",
            next_seq: head + 1,
            live,
            queue: VecDeque::new(),
            turn: None,
            permissions: HashMap::new(),
            connections: HashMap::new(),
            next_conn: 0,
            notices_tx,
            internal_tx,
        };
        tracing::info!(workspace = %actor.row.id, "workspace actor awake");
        actor.ensure_session().await;

        let idle = registry.inner.deps.idle_sleep;
        let shutdown = registry.inner.shutdown.clone();
        let mut idle_deadline = Instant::now() + idle;
        let mut buf = Vec::with_capacity(NOTICE_BATCH);
        loop {
            let idle_now =
                actor.connections.is_empty() && actor.turn.is_none() && actor.queue.is_empty();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(cmd) = mailbox.recv() => {
                    actor.command(cmd).await;
                    idle_deadline = Instant::now() + idle;
                }
                n = notices.recv_many(&mut buf, NOTICE_BATCH) => {
                    if n > 0 {
                        actor.notices(std::mem::take(&mut buf)).await;
                    }
                }
                Some(Internal::TurnDone { prompt_seq, result }) = internal.recv() => {
                    // What the agent said before the turn ended is in the room before its end.
                    while let Ok(n) = notices.try_recv() {
                        buf.push(n);
                    }
                    if !buf.is_empty() {
                        actor.notices(std::mem::take(&mut buf)).await;
                    }
                    actor.turn_done(prompt_seq, result).await;
                    idle_deadline = Instant::now() + idle;
                }
                _ = tokio::time::sleep_until(idle_deadline), if idle_now => {
                    if actor.try_sleep(&mut mailbox) {
                        break;
                    }
                    idle_deadline = Instant::now() + idle;
                }
            }
        }
        if let Some(session) = actor.session.take() {
            session.close().await;
        }
        tracing::info!(workspace = %actor.row.id, "workspace actor asleep");
    }

    /// Falls asleep unless a call is on its way in; calls that slip in are sent to a new actor.
    fn try_sleep(&mut self, mailbox: &mut mpsc::Receiver<Command>) -> bool {
        let mut actors = self.registry.inner.actors.lock().expect("registry lock");
        if !mailbox.is_empty() {
            return false;
        }
        if actors
            .get(&self.row.id)
            .is_some_and(|h| h.tx.same_channel(&self.me.tx))
        {
            actors.remove(&self.row.id);
        }
        mailbox.close();
        drop(actors);
        while let Ok(cmd) = mailbox.try_recv() {
            cmd.reject(|| ActorError::Asleep);
        }
        true
    }

    /// Resume-or-create the `default` session with the workspace's agent, if not live already.
    async fn ensure_session(&mut self) -> Option<Arc<Session>> {
        if let Some(s) = &self.session {
            return Some(s.clone());
        }
        self.status = "connecting";
        let request = CreateSessionRequest {
            id: session_id_of(&self.row.id),
            agent: self.row.agent.clone(),
            cwd: None,
            sandbox_id: Some(self.row.sandbox_id.clone()),
        };
        match self
            .registry
            .sandbox()
            .resume_or_create_session(request, self.notices_tx.clone())
            .await
        {
            Ok(session) => {
                let session = Arc::new(session);
                self.session = Some(session.clone());
                self.status = if self.turn.is_some() {
                    "working"
                } else {
                    "idle"
                };
                Some(session)
            }
            Err(e) => {
                tracing::error!(workspace = %self.row.id, error = %e, "could not start the agent session");
                self.status = "error";
                let message =
                    "The agent could not be started; it will be tried again on the next prompt.";
                self.append_logged(vec![RoomEvent::Notice {
                    level: NoticeLevel::Error,
                    message: message.into(),
                }])
                .await;
                None
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(Ok(self.info().await));
            }
            Command::Prompt {
                member,
                text,
                reply,
            } => {
                let _ = reply.send(self.prompt(member, text).await);
            }
            Command::Cancel { member, reply } => {
                let _ = reply.send(self.cancel(member).await);
            }
            Command::Permission {
                member,
                request_id,
                option_id,
                reply,
            } => {
                let _ = reply.send(self.answer_permission(member, request_id, option_id).await);
            }
            Command::Connect { member, reply } => {
                let _ = reply.send(self.connect(member).await);
            }
            Command::Disconnect { conn_id } => self.disconnect(conn_id).await,
            Command::Typing { member } => {
                let _ = self.live.send(Live::Typing(member));
            }
            Command::Crash => panic!("crash requested for workspace {}", self.row.id),
        }
    }

    async fn info(&self) -> WorkspaceInfo {
        let mut online: Vec<Member> = Vec::new();
        for m in self.connections.values() {
            if !online.iter().any(|o| o.user_id == m.user_id) {
                online.push(m.clone());
            }
        }
        online.sort_by(|a, b| a.display_name.cmp(&b.display_name));
        WorkspaceInfo {
            workspace_id: self.row.id.clone(),
            sandbox_id: self.row.sandbox_id.clone(),
            agent: self.row.agent.clone(),
            session_id: match &self.session {
                Some(s) => Some(s.id().await),
                None => None,
            },
            status: self.status.to_string(),
            online,
            queue: self.queue.iter().cloned().collect(),
            head: self.next_seq - 1,
        }
    }

    /// Persists entries (one statement), then broadcasts them.
    async fn append(&mut self, events: Vec<RoomEvent>) -> Result<i64, StoreError> {
        let now = now_ms();
        let entries: Vec<RoomEntry> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| RoomEntry {
                seq: self.next_seq + i as i64,
                created_at: now,
                event,
            })
            .collect();
        room_log::append(self.registry.pool(), &self.row.id, &entries).await?;
        self.next_seq += entries.len() as i64;
        let first = entries.first().map(|e| e.seq).unwrap_or(self.next_seq);
        for entry in entries {
            let _ = self.live.send(Live::Entry(Arc::new(entry)));
        }
        Ok(first)
    }

    /// Appends what the agent did: never dropped, so a database outage is waited out.
    async fn append_retrying(&mut self, events: Vec<RoomEvent>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.append(events.clone()).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(workspace = %self.row.id, error = %e, "could not write the room log; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    // A write that did commit before failing must not be written again.
                    if let Ok(head) = room_log::head(self.registry.pool(), &self.row.id).await
                        && head >= self.next_seq
                    {
                        let written = head - self.next_seq + 1;
                        tracing::warn!(workspace = %self.row.id, written, "room log write had committed");
                        self.next_seq = head + 1;
                        return;
                    }
                }
            }
        }
    }

    async fn append_logged(&mut self, events: Vec<RoomEvent>) {
        if let Err(e) = self.append(events).await {
            tracing::error!(workspace = %self.row.id, error = %e, "could not write the room log");
        }
    }

    async fn prompt(&mut self, member: Member, text: String) -> Result<i64, ActorError> {
        let chat = RoomEvent::ChatUser {
            user_id: member.user_id.clone(),
            display_name: member.display_name.clone(),
            text: text.clone(),
            created_at: now_ms(),
        };
        let seq = self.append(vec![chat]).await?;
        let queued = QueuedPrompt {
            seq,
            user_id: member.user_id,
            display_name: member.display_name,
            text,
        };
        if self.turn.is_some() {
            let event = RoomEvent::PromptQueued {
                prompt_seq: seq,
                user_id: queued.user_id.clone(),
                display_name: queued.display_name.clone(),
                position: self.queue.len() + 1,
            };
            self.queue.push_back(queued);
            self.append_retrying(vec![event]).await;
        } else {
            self.start_turn(queued).await;
        }
        Ok(seq)
    }

    async fn start_turn(&mut self, prompt: QueuedPrompt) {
        let started = RoomEvent::TurnStarted {
            prompt_seq: prompt.seq,
            user_id: prompt.user_id.clone(),
            display_name: prompt.display_name.clone(),
        };
        self.append_retrying(vec![started]).await;
        self.turn = Some(prompt.seq);
        let Some(session) = self.ensure_session().await else {
            let err = AcpError::Unreachable("the agent session could not be started".into());
            let _ = self
                .internal_tx
                .send(Internal::TurnDone {
                    prompt_seq: prompt.seq,
                    result: Err(err),
                })
                .await;
            return;
        };
        self.status = "working";
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = session.prompt(&prompt.text).await;
            let _ = internal
                .send(Internal::TurnDone {
                    prompt_seq: prompt.seq,
                    result,
                })
                .await;
        });
    }

    async fn turn_done(&mut self, prompt_seq: i64, result: Result<TurnEnd, AcpError>) {
        self.turn = None;
        self.status = if self.session.is_some() {
            "idle"
        } else {
            "error"
        };
        let ended = match result {
            Ok(end) => RoomEvent::TurnEnded {
                prompt_seq,
                stop_reason: Some(end.stop_reason),
                error: None,
            },
            Err(e) => {
                tracing::warn!(workspace = %self.row.id, error = %e, "turn failed");
                if e.is_gone() {
                    // The next prompt restores the session on a new connection.
                    self.status = "idle";
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
        self.append_retrying(vec![ended]).await;
        if let Some(next) = self.queue.pop_front() {
            self.start_turn(next).await;
        }
    }

    async fn cancel(&mut self, member: Member) -> Result<(), ActorError> {
        if self.turn.is_none() {
            return Err(ActorError::Conflict("No turn is running.".into()));
        }
        let Some(session) = self.session.clone() else {
            return Err(ActorError::Conflict("No turn is running.".into()));
        };
        let event = RoomEvent::TurnCancelling {
            user_id: member.user_id,
            display_name: member.display_name,
        };
        self.append(vec![event]).await?;
        session.cancel().await?;
        Ok(())
    }

    async fn answer_permission(
        &mut self,
        member: Member,
        request_id: String,
        option_id: String,
    ) -> Result<(), ActorError> {
        let state = self.permissions.get(&request_id).ok_or_else(|| {
            ActorError::NotFound(format!("There is no permission request `{request_id}`."))
        })?;
        if let Some(by) = &state.answered_by {
            return Err(ActorError::Conflict(format!(
                "Already answered by {}.",
                by.display_name
            )));
        }
        let session = self
            .session
            .clone()
            .ok_or_else(|| ActorError::Conflict("The request has expired.".into()))?;
        session
            .respond_permission(&request_id, &option_id)
            .await
            .map_err(|e| match e {
                AcpError::Invalid(m) => ActorError::Invalid(m),
                other => ActorError::Agent(other),
            })?;
        if let Some(state) = self.permissions.get_mut(&request_id) {
            state.answered_by = Some(member.clone());
        }
        let event = RoomEvent::PermissionAnswered {
            request_id,
            option_id,
            user_id: member.user_id,
            display_name: member.display_name,
        };
        self.append_retrying(vec![event]).await;
        Ok(())
    }

    async fn connect(&mut self, member: Member) -> Result<Subscription, ActorError> {
        let first = !self
            .connections
            .values()
            .any(|m| m.user_id == member.user_id);
        // Subscribe before reading the head: every entry after it is sure to come live.
        let live = self.live.subscribe();
        self.next_conn += 1;
        let conn_id = self.next_conn;
        self.connections.insert(conn_id, member.clone());
        if first {
            let event = RoomEvent::Presence {
                user_id: member.user_id,
                display_name: member.display_name,
                online: true,
            };
            self.append_logged(vec![event]).await;
        }
        Ok(Subscription {
            conn_id,
            head: self.next_seq - 1,
            live,
            handle: self.me.clone(),
        })
    }

    async fn disconnect(&mut self, conn_id: u64) {
        let Some(member) = self.connections.remove(&conn_id) else {
            return;
        };
        if !self
            .connections
            .values()
            .any(|m| m.user_id == member.user_id)
        {
            let event = RoomEvent::Presence {
                user_id: member.user_id,
                display_name: member.display_name,
                online: false,
            };
            self.append_logged(vec![event]).await;
        }
    }

    async fn notices(&mut self, notices: Vec<SessionNotice>) {
        let mut events = Vec::with_capacity(notices.len());
        for notice in notices {
            match notice {
                SessionNotice::Event(e) => events.push(RoomEvent::SessionEvent(e)),
                SessionNotice::PermissionRequested { request_id, params } => {
                    self.permissions.insert(request_id.clone(), PermissionState { answered_by: None });
                    events.push(RoomEvent::PermissionRequested { request_id, request: params });
                }
                SessionNotice::PermissionsCancelled(ids) => {
                    let open: Vec<String> = ids
                        .into_iter()
                        .filter(|id| self.permissions.get(id).is_some_and(|p| p.answered_by.is_none()))
                        .collect();
                    for id in &open {
                        self.permissions.remove(id);
                    }
                    if !open.is_empty() {
                        events.push(RoomEvent::PermissionCancelled { request_ids: open });
                    }
                }
                SessionNotice::Malformed(_) => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: "The agent sent something Huddle could not read; it was skipped.".into(),
                }),
                SessionNotice::StreamGap { last_seen, resumed_at } => events.push(RoomEvent::Notice {
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
                SessionNotice::ConnectionLost(_) => events.push(RoomEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: "The connection to the agent was lost; the next prompt restores the session.".into(),
                }),
                SessionNotice::Restored { replayed_events } => {
                    events.push(RoomEvent::SessionRestored { replayed_events })
                }
            }
        }
        if !events.is_empty() {
            self.append_retrying(events).await;
        }
    }
}
