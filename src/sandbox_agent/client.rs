//! Sessions with the TypeScript SDK's semantics: resume-or-create, resume with replayed history,
//! prompt, cancel, permission replies, destroy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::acp;
use super::connection::{Binding, Connection, PendingPermission, Permissions};
use super::error::AcpError;
pub use super::notice::{SessionNotice, TurnEnd};
use super::persist::SessionPersistDriver;
use super::records::{SessionEvent, SessionRecord, now_ms};
use super::transport::Endpoint;

pub const DEFAULT_REPLAY_MAX_EVENTS: usize = 50;
pub const DEFAULT_REPLAY_MAX_CHARS: usize = 12_000;
const REPLAY_PREFIX: &str = "Previous session history is replayed below as JSON-RPC envelopes. Use it as \
     context before responding to the latest user prompt.\n";

/// An agent sandbox-agent knows of.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub id: String,
    #[serde(default)]
    pub installed: bool,
    #[serde(default)]
    pub credentials_available: bool,
}

#[derive(Debug, Clone)]
pub struct CreateSessionRequest {
    pub id: String,
    pub agent: String,
    pub cwd: Option<String>,
    pub sandbox_id: Option<String>,
    pub options: ChosenOptions,
    /// The agent's own session to fork this new one from (`session/fork`), where the agent
    /// offers it; else (or when it refuses) the session starts new.
    pub fork_of: Option<String>,
}

/// The options the room chose (config id -> value; [`acp::LEGACY_MODE`] for a mode list), shared
/// with the room that keeps them: every session opened after they were chosen gets them again,
/// since a new agent process starts with its defaults.
pub type ChosenOptions = Arc<Mutex<std::collections::BTreeMap<String, String>>>;

/// A client of one sandbox-agent server. Cheap to clone.
#[derive(Clone)]
pub struct SandboxAgent {
    inner: Arc<AgentInner>,
}

struct AgentInner {
    endpoint: Endpoint,
    http: reqwest::Client,
    persist: Arc<dyn SessionPersistDriver>,
    replay_max_events: usize,
    replay_max_chars: usize,
}

impl SandboxAgent {
    pub fn new(endpoint: Endpoint, persist: Arc<dyn SessionPersistDriver>) -> Self {
        // Idle connections are bounded (each keeps a task and a socket): a room that wakes and
        // sleeps all day does not collect them.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a default HTTP client builds");
        Self {
            inner: Arc::new(AgentInner {
                endpoint,
                http,
                persist,
                replay_max_events: DEFAULT_REPLAY_MAX_EVENTS,
                replay_max_chars: DEFAULT_REPLAY_MAX_CHARS,
            }),
        }
    }

    pub fn persist(&self) -> &Arc<dyn SessionPersistDriver> {
        &self.inner.persist
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}{}",
            self.inner.endpoint.base_url.trim_end_matches('/'),
            path
        );
        let req = self.inner.http.get(url).timeout(Duration::from_secs(10));
        match &self.inner.endpoint.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn health(&self) -> Result<(), AcpError> {
        let res = self
            .get("/v1/health")
            .send()
            .await
            .map_err(AcpError::from_reqwest)?;
        check_status(res).await.map(|_| ())
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>, AcpError> {
        #[derive(Deserialize)]
        struct Agents {
            agents: Vec<AgentInfo>,
        }
        let res = check_status(
            self.get("/v1/agents")
                .send()
                .await
                .map_err(AcpError::from_reqwest)?,
        )
        .await?;
        let agents: Agents = res
            .json()
            .await
            .map_err(|e| AcpError::Malformed(e.to_string()))?;
        Ok(agents.agents)
    }

    /// The server ids of the connections the server holds (each with its agent running).
    pub async fn list_connections(&self) -> Result<Vec<String>, AcpError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Server {
            server_id: String,
        }
        #[derive(Deserialize)]
        struct Servers {
            servers: Vec<Server>,
        }
        let res = check_status(
            self.get("/v1/acp")
                .send()
                .await
                .map_err(AcpError::from_reqwest)?,
        )
        .await?;
        let servers: Servers = res
            .json()
            .await
            .map_err(|e| AcpError::Malformed(e.to_string()))?;
        Ok(servers.servers.into_iter().map(|s| s.server_id).collect())
    }

    /// Closes a connection by its server id, as one left over by a crashed process (a 404 means it
    /// is gone already). sandbox-agent 0.4.2's DELETE forgets the connection at once, then waits
    /// for the agent to exit, which it does not while its stdin is open: the wait is given up
    /// after 3 s, and giving it up drops the agent's stdin, so the agent ends (a timeout is done).
    pub async fn close_connection(&self, server_id: &str) -> Result<(), AcpError> {
        let url = format!(
            "{}/v1/acp/{server_id}",
            self.inner.endpoint.base_url.trim_end_matches('/')
        );
        let mut req = self.inner.http.delete(url).timeout(Duration::from_secs(3));
        if let Some(t) = &self.inner.endpoint.token {
            req = req.bearer_auth(t);
        }
        let res = match req.send().await {
            Err(e) if e.is_timeout() => return Ok(()),
            other => other.map_err(AcpError::from_reqwest)?,
        };
        if res.status().is_success() || res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        check_status(res).await.map(|_| ())
    }

    /// Re-attaches a session to the connection a previous process had it live on (sandbox-agent
    /// keeps a connection, and its agent, until it is closed): the stream resumes right after what
    /// was persisted, and the permission requests that were open can be answered again. Fails with
    /// [`AcpError::ConnectionGone`] when sandbox-agent no longer knows the connection.
    pub async fn attach_session(
        &self,
        id: &str,
        server_connection: &str,
        prompt_rpc_id: u64,
        permissions: Vec<(String, Value, Value)>,
        notices: mpsc::Sender<SessionNotice>,
        options: ChosenOptions,
    ) -> Result<Session, AcpError> {
        let inner = &self.inner;
        let record = super::watched("attach: read the session", inner.persist.get_session(id))
            .await
            .map_err(persist_err)?
            .ok_or_else(|| AcpError::Invalid(format!("session '{id}' not found")))?;
        let local_id = server_connection
            .strip_prefix(&format!("huddle-{}-", record.agent))
            .ok_or_else(|| AcpError::Invalid(format!("`{server_connection}` is not ours")))?
            .to_string();
        if !super::watched(
            "attach: probe the connection",
            Connection::probe(
                inner.http.clone(),
                &inner.endpoint,
                &record.agent,
                &local_id,
            ),
        )
        .await?
        {
            return Err(AcpError::ConnectionGone(
                "sandbox-agent no longer has the connection".into(),
            ));
        }
        let last_stream_id = super::watched(
            "attach: read the stream cursor",
            inner.persist.stream_cursor(&local_id),
        )
        .await
        .map_err(persist_err)?
        .unwrap_or(0);
        let next_index = super::watched(
            "attach: read the last event index",
            inner.persist.max_event_index(&record.id),
        )
        .await
        .map_err(persist_err)?
        .unwrap_or(0)
            + 1;
        // What the agent said it can do, when the connection opened (images, `session/load`).
        let initialized = super::watched(
            "attach: read the connection's capabilities",
            inner.persist.initialized(&record.id, &local_id),
        )
        .await
        .map_err(persist_err)?;
        // The turn may have ended already: its answer read and recorded by a process that stopped
        // before the room heard of it. The stream resumes after it, so it is taken from the record.
        let answered = super::watched(
            "attach: look for the turn's recorded answer",
            inner.persist.reply_to(&record.id, &local_id, prompt_rpc_id),
        )
        .await
        .map_err(persist_err)?;
        let agent = record.agent.clone();
        let session = Session::new(self.clone(), record, notices, options);
        session
            .next_index
            .store(next_index, std::sync::atomic::Ordering::SeqCst);
        let binding = Binding {
            session_id: session.state.lock().await.record.id.clone(),
            next_index: session.next_index.clone(),
        };
        let (conn, reply) = Connection::attach(
            inner.http.clone(),
            &inner.endpoint,
            &agent,
            &local_id,
            inner.persist.clone(),
            session.notices.clone(),
            session.permissions.clone(),
            binding,
            last_stream_id,
            answered.is_none().then_some(prompt_rpc_id),
        );
        let conn = Arc::new(conn);
        let reply = match answered {
            Some(envelope) => {
                tracing::info!(connection = %local_id, "the turn's answer was recorded before the restart");
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = tx.send(super::connection::reply_of(&envelope));
                Some(rx)
            }
            None => reply,
        };
        *session.attached_turn.lock().expect("attached turn lock") = reply;
        {
            let mut open = session.permissions.lock().expect("permissions lock");
            for (key, rpc_id, params) in permissions {
                let conn = conn.shared().clone();
                open.insert(
                    key,
                    PendingPermission {
                        conn,
                        rpc_id,
                        params,
                    },
                );
            }
        }
        {
            let mut state = session.state.lock().await;
            state.live = Some(conn);
            if let Some(init) = &initialized {
                session.learn(&mut state, init);
            }
        }
        Ok(session)
    }

    /// Resumes the session with this id if it was ever created, else creates it.
    pub async fn resume_or_create_session(
        &self,
        request: CreateSessionRequest,
        notices: mpsc::Sender<SessionNotice>,
    ) -> Result<Session, AcpError> {
        match self
            .inner
            .persist
            .get_session(&request.id)
            .await
            .map_err(persist_err)?
        {
            Some(mut record) => {
                // The working directory may have changed (a workspace made before it had one).
                if let Some(cwd) = &request.cwd {
                    record.session_init = Some(acp::new_session(cwd.clone()));
                }
                self.resume_session_record(record, notices, request.options)
                    .await
            }
            None => self.create_session(request, notices).await,
        }
    }

    pub async fn create_session(
        &self,
        request: CreateSessionRequest,
        notices: mpsc::Sender<SessionNotice>,
    ) -> Result<Session, AcpError> {
        if request.agent.trim().is_empty() {
            return Err(AcpError::Invalid("a session needs an agent".into()));
        }
        let cwd = request.cwd.clone().unwrap_or_else(default_cwd);
        let record = SessionRecord {
            id: request.id.clone(),
            agent: request.agent.trim().to_string(),
            agent_session_id: None,
            last_connection_id: String::new(),
            created_at: now_ms(),
            destroyed_at: None,
            session_init: Some(acp::new_session(cwd)),
            sandbox_id: request.sandbox_id.clone(),
        };
        let session = Session::new(self.clone(), record, notices, request.options);
        session.state.lock().await.fork_of = request.fork_of;
        session.connect(false).await?;
        Ok(session)
    }

    pub async fn resume_session(
        &self,
        id: &str,
        notices: mpsc::Sender<SessionNotice>,
    ) -> Result<Session, AcpError> {
        let record = self
            .inner
            .persist
            .get_session(id)
            .await
            .map_err(persist_err)?
            .ok_or_else(|| AcpError::Invalid(format!("session '{id}' not found")))?;
        self.resume_session_record(record, notices, ChosenOptions::default())
            .await
    }

    async fn resume_session_record(
        &self,
        record: SessionRecord,
        notices: mpsc::Sender<SessionNotice>,
        options: ChosenOptions,
    ) -> Result<Session, AcpError> {
        let session = Session::new(self.clone(), record, notices, options);
        session.connect(true).await?;
        Ok(session)
    }

    /// The replay text the SDK prepends to the first prompt after a resume.
    async fn replay_text(&self, session_id: &str) -> Result<(Option<String>, usize), AcpError> {
        let events = self
            .inner
            .persist
            .last_events(session_id, self.inner.replay_max_events)
            .await
            .map_err(persist_err)?;
        Ok((
            build_replay_text(&events, self.inner.replay_max_chars),
            events.len(),
        ))
    }
}

/// One session, live on at most one ACP connection at a time.
pub struct Session {
    agent: SandboxAgent,
    state: tokio::sync::Mutex<SessionState>,
    /// The reply of a turn that was running when a previous process stopped (a re-attach).
    attached_turn: Mutex<Option<tokio::sync::oneshot::Receiver<Result<Value, AcpError>>>>,
    notices: mpsc::Sender<SessionNotice>,
    permissions: Permissions,
    /// The agent takes images in prompts (as its `initialize` answer said).
    takes_images: std::sync::atomic::AtomicBool,
    /// The agent can fork sessions; this one was forked.
    forks: std::sync::atomic::AtomicBool,
    forked: std::sync::atomic::AtomicBool,
    options: ChosenOptions,
    /// The next event index, shared by all of the session's connections (see [`Binding`]).
    next_index: Arc<std::sync::atomic::AtomicI64>,
}

struct SessionState {
    record: SessionRecord,
    live: Option<Arc<Connection>>,
    replay: Option<String>,
    /// The agent can reopen its session (`session/load`, as its `initialize` answer said).
    can_load: bool,
    /// The next connection reopens the session after a stopped turn: the room is not told, as
    /// nothing was lost.
    quiet_reopen: bool,
    /// The agent's session a new one is forked from (taken by the first connection).
    fork_of: Option<String>,
    /// The agent can fork a session (`session/fork`, as its `initialize` answer said).
    can_fork: bool,
}

impl Session {
    fn new(
        agent: SandboxAgent,
        record: SessionRecord,
        notices: mpsc::Sender<SessionNotice>,
        options: ChosenOptions,
    ) -> Self {
        Self {
            agent,
            state: tokio::sync::Mutex::new(SessionState {
                record,
                live: None,
                replay: None,
                can_load: false,
                quiet_reopen: false,
                fork_of: None,
                can_fork: false,
            }),
            attached_turn: Mutex::new(None),
            notices,
            permissions: Arc::new(Mutex::new(HashMap::new())),
            takes_images: std::sync::atomic::AtomicBool::new(false),
            forks: std::sync::atomic::AtomicBool::new(false),
            forked: std::sync::atomic::AtomicBool::new(false),
            options,
            next_index: Arc::new(std::sync::atomic::AtomicI64::new(1)),
        }
    }

    /// What the agent's `initialize` answer says it can do.
    fn learn(&self, state: &mut SessionState, initialized: &Value) {
        self.takes_images.store(
            acp::takes_images(initialized),
            std::sync::atomic::Ordering::Relaxed,
        );
        state.can_load = acp::can_load_session(initialized);
        state.can_fork = acp::can_fork_session(initialized);
        self.forks
            .store(state.can_fork, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the agent can fork a session (known once the session is open).
    pub fn can_fork(&self) -> bool {
        self.forks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this session was forked from another by the agent itself.
    pub fn forked(&self) -> bool {
        self.forked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the agent takes images in prompts (known once the session is open).
    pub fn takes_images(&self) -> bool {
        self.takes_images.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn record(&self) -> SessionRecord {
        self.state.lock().await.record.clone()
    }

    pub async fn id(&self) -> String {
        self.state.lock().await.record.id.clone()
    }

    /// Opens a new connection and creates the remote session on it. With `resume`, the persisted
    /// history is queued as context for the next prompt.
    async fn connect(&self, resume: bool) -> Result<Arc<Connection>, AcpError> {
        let mut state = self.state.lock().await;
        self.connect_locked(&mut state, resume).await
    }

    async fn connect_locked(
        &self,
        state: &mut SessionState,
        resume: bool,
    ) -> Result<Arc<Connection>, AcpError> {
        if let Some(old) = state.live.take() {
            old.close().await;
        }
        let inner = &self.agent.inner;
        let conn = Arc::new(Connection::open(
            inner.http.clone(),
            &inner.endpoint,
            &state.record.agent,
            inner.persist.clone(),
            self.notices.clone(),
            self.permissions.clone(),
        ));
        // The record exists before its first event (events reference it). Bound before
        // `initialize`, so that its answer is kept: a process that re-attaches reads it there.
        state.record.last_connection_id = conn.id().to_string();
        state.record.destroyed_at = None;
        inner
            .persist
            .update_session(&state.record)
            .await
            .map_err(persist_err)?;
        let next = inner
            .persist
            .max_event_index(&state.record.id)
            .await
            .map_err(persist_err)?
            .unwrap_or(0)
            + 1;
        // Past what is persisted, and past what a closing connection of this session may still
        // be numbering.
        self.next_index
            .fetch_max(next, std::sync::atomic::Ordering::SeqCst);
        conn.bind(&state.record.id, self.next_index.clone());

        let init = acp::initialize();
        let initialized = conn
            .request(
                acp::method_initialize(),
                init,
                Some(Duration::from_secs(60)),
            )
            .await?;
        self.learn(state, &initialized);
        // The agent's own session, reopened with its whole conversation, when it can.
        let reopen = state
            .record
            .agent_session_id
            .clone()
            .filter(|_| resume && state.can_load);
        let init = state
            .record
            .session_init
            .clone()
            .unwrap_or_else(|| acp::new_session(default_cwd()));
        let mut opened = Value::Null;
        let loaded = match reopen {
            Some(agent_session) => {
                let params = acp::load_session(&agent_session, &init);
                match conn.load_session(params, Duration::from_secs(120)).await {
                    Ok(result) => {
                        opened = result;
                        true
                    }
                    Err(e) if e.is_gone() => return Err(e),
                    Err(e) => {
                        tracing::warn!(session = %state.record.id, error = %e, "session/load failed; starting a new session with replayed history");
                        false
                    }
                }
            }
            None => false,
        };
        let (replay, replayed) = if resume && !loaded {
            self.agent.replay_text(&state.record.id).await?
        } else {
            (None, 0)
        };
        // A new session forked from another, when asked and the agent offers it.
        let mut forked = false;
        if !loaded && let Some(source) = state.fork_of.take().filter(|_| state.can_fork) {
            let params = acp::fork_session(&source, &init);
            match conn
                .request(
                    acp::method_fork_session(),
                    params,
                    Some(Duration::from_secs(120)),
                )
                .await
            {
                Ok(created) => {
                    state.record.agent_session_id = acp::new_session_id(created.clone());
                    opened = created;
                    forked = true;
                }
                Err(e) if e.is_gone() => return Err(e),
                Err(e) => {
                    tracing::warn!(session = %state.record.id, error = %e, "session/fork failed; starting a new session")
                }
            }
        }
        self.forked
            .store(forked, std::sync::atomic::Ordering::Relaxed);
        if !loaded && !forked {
            let created = conn
                .request(
                    acp::method_new_session(),
                    init,
                    Some(Duration::from_secs(120)),
                )
                .await?;
            // Some agents (the builtin mock) answer without a sessionId; the local id stands in then.
            state.record.agent_session_id = acp::new_session_id(created.clone());
            opened = created;
        }
        inner
            .persist
            .update_session(&state.record)
            .await
            .map_err(persist_err)?;
        let sid = state
            .record
            .agent_session_id
            .clone()
            .unwrap_or_else(|| state.record.id.clone());
        self.restore_options(&conn, &sid, opened).await?;
        state.replay = replay;
        state.live = Some(conn.clone());
        let quiet = std::mem::take(&mut state.quiet_reopen) && loaded;
        if resume && !quiet {
            let _ = self
                .notices
                .send(SessionNotice::Restored {
                    replayed_events: replayed,
                    full_memory: loaded,
                })
                .await;
        }
        Ok(conn)
    }

    /// Sets again, on a session just opened, each option the room chose that it does not have:
    /// a new agent process starts with its defaults. A refusal is told to the room; the session
    /// is open all the same.
    async fn restore_options(
        &self,
        conn: &Connection,
        sid: &str,
        opened: Value,
    ) -> Result<(), AcpError> {
        let chosen: Vec<(String, String)> = self
            .options
            .lock()
            .expect("options lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if chosen.is_empty() {
            return Ok(());
        }
        let current = acp::current_options(&json!({ "result": opened }));
        for (config_id, value) in chosen {
            if current
                .iter()
                .any(|(id, v)| *id == config_id && *v == value)
            {
                continue;
            }
            match send_option(conn, sid, &config_id, &value).await {
                Ok(()) => {}
                Err(e) if e.is_gone() => return Err(e),
                Err(e) => {
                    tracing::warn!(session = %sid, %config_id, %value, error = %e, "the agent refused an option the room chose");
                    let _ = self
                        .notices
                        .send(SessionNotice::OptionRefused { config_id, value })
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Changes one of the session's options (`mode` through `session/set_mode` when it is
    /// [`acp::LEGACY_MODE`]); once the agent took it, every later session gets it too.
    pub async fn set_option(&self, config_id: &str, value: &str) -> Result<(), AcpError> {
        // The replayed history (if any) stays for the next prompt.
        let (conn, sid, _) = self.live(false).await?;
        send_option(&conn, &sid, config_id, value).await?;
        self.options
            .lock()
            .expect("options lock")
            .insert(config_id.to_string(), value.to_string());
        Ok(())
    }

    /// The live connection, restoring the session on a new one when the old one is gone; with
    /// `take_replay`, the history to replay into the next prompt (once).
    async fn live(
        &self,
        take_replay: bool,
    ) -> Result<(Arc<Connection>, String, Option<String>), AcpError> {
        let mut state = self.state.lock().await;
        let conn = match &state.live {
            Some(c) if !c.is_gone() => c.clone(),
            _ => self.connect_locked(&mut state, true).await?,
        };
        let sid = state
            .record
            .agent_session_id
            .clone()
            .unwrap_or_else(|| state.record.id.clone());
        let replay = if take_replay {
            state.replay.take()
        } else {
            None
        };
        Ok((conn, sid, replay))
    }

    /// Sends a prompt and waits for the turn to end.
    pub async fn prompt(&self, text: &str) -> Result<TurnEnd, AcpError> {
        self.prompt_reporting(
            vec![acp::PromptBlock::Text(text.to_string())],
            |_, _| async { true },
        )
        .await
    }

    /// Like [`Session::prompt`], telling `sent` on which connection (server id) and with which
    /// request id the prompt goes out, so that a restarted process can wait for its reply.
    /// `sent` is told where the prompt goes (the connection and the request id) before it goes,
    /// and the prompt waits for its answer: `false` keeps it back (it was stopped meanwhile), and
    /// the turn ends cancelled without the agent.
    pub async fn prompt_reporting<F: std::future::Future<Output = bool> + Send>(
        &self,
        blocks: Vec<acp::PromptBlock>,
        mut sent: impl FnMut(&str, u64) -> F + Send,
    ) -> Result<TurnEnd, AcpError> {
        for attempt in 0..2 {
            let (conn, sid, replay) = self.live(true).await?;
            let texts = replay
                .map(acp::PromptBlock::Text)
                .into_iter()
                .chain(blocks.iter().cloned())
                .collect();
            let id = conn.next_request_id();
            if !sent(conn.server_id(), id).await {
                return Ok(TurnEnd {
                    stop_reason: "cancelled".into(),
                });
            }
            let params = acp::prompt(&sid, texts);
            match conn
                .request_as(id, acp::method_prompt(), params, None)
                .await
            {
                Ok(result) => {
                    let end = turn_end(result);
                    if end.stop_reason == "cancelled" {
                        self.reopen_after_stop(&conn).await;
                    }
                    return Ok(end);
                }
                // The server did not know the connection, so the prompt never reached the agent:
                // restore the session and send it again, once.
                Err(AcpError::UnknownConnection(_)) if attempt == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AcpError::ConnectionGone(
            "the session could not be restored".into(),
        ))
    }

    /// After a stopped turn, an agent that can reopen its session gets a fresh connection for the
    /// next prompt, so nothing of the stopped turn leaks into it: Claude's adapter (0.23.1)
    /// answers the next prompt at once with the stopped turn's late result and goes on outside
    /// any turn (claude-agent-acp issue #551). The old connection is closed in the background, as
    /// a DELETE can wait on the agent.
    async fn reopen_after_stop(&self, conn: &Arc<Connection>) {
        let mut state = self.state.lock().await;
        if !state.can_load || !state.live.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return;
        }
        state.quiet_reopen = true;
        if let Some(old) = state.live.take() {
            tokio::spawn(async move { old.close().await });
        }
    }

    /// Waits for the end of the turn whose prompt went out before a restart, on the connection
    /// [`SandboxAgent::attach_session`] re-attached to.
    pub async fn await_turn(&self) -> Result<TurnEnd, AcpError> {
        let gone = || AcpError::ConnectionGone("the session is not attached to a turn".into());
        let reply = self
            .attached_turn
            .lock()
            .expect("attached turn lock")
            .take()
            .ok_or_else(gone)?;
        let conn = self.state.lock().await.live.clone().ok_or_else(gone)?;
        conn.wait_reply(reply).await.map(turn_end)
    }

    /// Stops the running turn; the session lives on. Unanswered permission requests are cancelled,
    /// as ACP asks of a client that cancels.
    pub async fn cancel(&self) -> Result<(), AcpError> {
        let (conn, sid) = {
            let state = self.state.lock().await;
            match &state.live {
                Some(c) if !c.is_gone() => (
                    c.clone(),
                    state
                        .record
                        .agent_session_id
                        .clone()
                        .unwrap_or_else(|| state.record.id.clone()),
                ),
                _ => return Ok(()),
            }
        };
        // As ACP says: the cancel first, then the pending questions answered "cancelled".
        let sent = conn.notify(acp::method_cancel(), acp::cancel(&sid)).await;
        self.cancel_permissions().await;
        sent
    }

    /// Answers a permission request with one of its options. Only the first answer counts.
    pub async fn respond_permission(
        &self,
        request_id: &str,
        option_id: &str,
    ) -> Result<(), AcpError> {
        let pending = {
            let perms = self.permissions.lock().expect("permissions lock");
            perms.get(request_id).cloned()
        }
        .ok_or_else(|| {
            AcpError::Invalid(format!(
                "permission request {} is not pending",
                crate::error::quoted(request_id)
            ))
        })?;
        let known = acp::offers_option(&pending.params, option_id);
        if !known {
            return Err(AcpError::Invalid(format!(
                "{} is not an option of this request",
                crate::error::quoted(option_id)
            )));
        }
        if self
            .permissions
            .lock()
            .expect("permissions lock")
            .remove(request_id)
            .is_none()
        {
            return Err(AcpError::Invalid(format!(
                "permission request {} is not pending",
                crate::error::quoted(request_id)
            )));
        }
        let outcome = acp::permission_selected(option_id);
        pending.conn.respond(pending.rpc_id, outcome).await
    }

    /// Ids of the permission requests still waiting for an answer.
    pub fn pending_permissions(&self) -> Vec<String> {
        self.permissions
            .lock()
            .expect("permissions lock")
            .keys()
            .cloned()
            .collect()
    }

    async fn cancel_permissions(&self) {
        let drained: Vec<_> = self
            .permissions
            .lock()
            .expect("permissions lock")
            .drain()
            .collect();
        if drained.is_empty() {
            return;
        }
        let ids = drained.iter().map(|(k, _)| k.clone()).collect();
        for (_, p) in drained {
            let _ = p.conn.respond(p.rpc_id, acp::permission_cancelled()).await;
        }
        let _ = self
            .notices
            .send(SessionNotice::PermissionsCancelled(ids))
            .await;
    }

    /// Ends the session for good: pending permissions are cancelled, the turn stopped, the record
    /// marked destroyed, the connection closed.
    pub async fn destroy(&self) -> Result<(), AcpError> {
        let _ = self.cancel().await;
        let mut state = self.state.lock().await;
        state.record.destroyed_at = Some(now_ms());
        self.agent
            .inner
            .persist
            .update_session(&state.record)
            .await
            .map_err(persist_err)?;
        if let Some(conn) = state.live.take() {
            conn.close().await;
        }
        Ok(())
    }

    /// Lets go of the live connection and leaves it open, its agent and turn running, for the
    /// node the workspace is handed over to (it re-attaches to it).
    pub async fn detach(&self) {
        self.permissions.lock().expect("permissions lock").clear();
        if let Some(conn) = self.state.lock().await.live.take() {
            conn.detach().await;
        }
    }

    /// Closes the live connection but keeps the session (an actor going to sleep).
    pub async fn close(&self) {
        self.permissions.lock().expect("permissions lock").clear();
        if let Some(conn) = self.state.lock().await.live.take() {
            conn.close().await;
        }
    }

    /// Drops the live event stream so it resumes with Last-Event-ID (for tests of resumption).
    pub async fn cut_event_stream(&self) {
        if let Some(conn) = &self.state.lock().await.live {
            conn.cut_stream();
        }
    }
}

async fn send_option(
    conn: &Connection,
    sid: &str,
    config_id: &str,
    value: &str,
) -> Result<(), AcpError> {
    let (method, params) = if config_id == acp::LEGACY_MODE {
        (acp::method_set_mode(), acp::set_mode(sid, value))
    } else {
        (
            acp::method_set_config_option(),
            acp::set_config_option(sid, config_id, value),
        )
    };
    conn.request(method, params, Some(Duration::from_secs(30)))
        .await
        .map(|_| ())
}

fn turn_end(result: Value) -> TurnEnd {
    TurnEnd {
        stop_reason: acp::stop_reason(result),
    }
}

fn persist_err(e: super::persist::PersistError) -> AcpError {
    AcpError::Persist(e.to_string())
}

fn default_cwd() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/".into())
}

async fn check_status(res: reqwest::Response) -> Result<reqwest::Response, AcpError> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status().as_u16();
    let problem = res.json().await.unwrap_or_default();
    Err(AcpError::Http { status, problem })
}

/// The SDK's replay text: the last events as JSON lines, cut at `max_chars`.
pub(crate) fn build_replay_text(events: &[SessionEvent], max_chars: usize) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    let mut text = String::from(REPLAY_PREFIX);
    for event in events {
        let line = json!({"createdAt": event.created_at, "sender": event.sender, "payload": event.payload}).to_string();
        if text.len() + line.len() + 1 > max_chars {
            text.push_str("\n[history truncated]");
            break;
        }
        text.push_str(&line);
        text.push('\n');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox_agent::Sender;

    fn event(i: i64, text: &str) -> SessionEvent {
        SessionEvent {
            id: format!("e{i}"),
            event_index: i,
            session_id: "s".into(),
            created_at: 1000 + i,
            connection_id: "c".into(),
            sender: Sender::Client,
            payload: json!({"jsonrpc": "2.0", "method": "session/prompt", "params": {"text": text}}),
        }
    }

    #[test]
    fn replay_text_matches_the_sdk_and_is_bounded() {
        assert_eq!(build_replay_text(&[], 12_000), None);
        let text = build_replay_text(&[event(1, "hello")], 12_000).unwrap();
        assert!(text.starts_with(REPLAY_PREFIX));
        assert!(text.contains(r#"{"createdAt":1001,"sender":"client","payload":"#));
        let many: Vec<_> = (0..50).map(|i| event(i, &"x".repeat(500))).collect();
        let text = build_replay_text(&many, 12_000).unwrap();
        assert!(text.len() <= 12_000 + "\n[history truncated]".len());
        assert!(text.ends_with("[history truncated]"));
    }
}
