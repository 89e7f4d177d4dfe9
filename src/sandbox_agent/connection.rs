//! JSON-RPC over the transport: requests with replies, notifications, answers to the agent's
//! requests, and the pump that turns every envelope into a persisted SessionEvent before anyone
//! hears of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::AcpError;
use super::notice::SessionNotice;
use super::persist::{PersistError, SessionPersistDriver};
use super::records::{
    Sender, SessionEvent, envelope_id, envelope_method, is_response, now_ms, random_id,
};
use super::transport::{Endpoint, Inbound, Transport};

type Reply = Result<Value, AcpError>;

/// Envelopes taken at once from the stream and written in one statement when they arrive fast.
const MAX_BATCH: usize = 256;
const INBOUND_CAPACITY: usize = 16_384;
/// How long letting go of a connection waits for its pump to write what it had read.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write in flight when the connection is let go may still take.
const LAST_WRITE_GRACE: Duration = Duration::from_millis(250);

/// Which local session the envelopes of a connection belong to, and its next event index:
/// shared by every connection of the session, so that a closing connection's last envelopes and
/// a new connection's first never get the same index.
pub struct Binding {
    pub session_id: String,
    pub next_index: Arc<AtomicI64>,
}

/// A permission request from the agent that nobody has answered yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingPermission {
    pub conn: Arc<ConnectionShared>,
    pub rpc_id: Value,
    pub params: Value,
}

/// What the caller side and the pump share.
pub(crate) struct ConnectionShared {
    pub id: String,
    server_id: String,
    transport: Arc<Transport>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    gone: CancellationToken,
    /// Cancelled when the pump has ended: nothing of this connection is written after it.
    pumped: CancellationToken,
    binding: Mutex<Option<Binding>>,
    /// The id of a `session/load` in flight: the agent replays the conversation as
    /// `session/update`s before answering it. That is history the room already has, so those
    /// updates are neither recorded nor announced again.
    replaying: Mutex<Option<String>>,
}

impl std::fmt::Debug for ConnectionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Connection {
    shared: Arc<ConnectionShared>,
    next_id: AtomicU64,
}

pub(crate) type Permissions = Arc<Mutex<HashMap<String, PendingPermission>>>;

impl Connection {
    /// Opens a connection to `agent` (nothing is sent until the first request).
    pub(crate) fn open(
        http: reqwest::Client,
        endpoint: &Endpoint,
        agent: &str,
        persist: Arc<dyn SessionPersistDriver>,
        notices: mpsc::Sender<SessionNotice>,
        permissions: Permissions,
    ) -> Self {
        let id = random_id();
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let server_id = format!("huddle-{agent}-{id}");
        let transport = Arc::new(Transport::new(http, endpoint, &server_id, agent, tx, false));
        let shared = Arc::new(ConnectionShared {
            id,
            server_id,
            transport,
            pending: Mutex::new(HashMap::new()),
            gone: CancellationToken::new(),
            pumped: CancellationToken::new(),
            binding: Mutex::new(None),
            replaying: Mutex::new(None),
        });
        tokio::spawn(pump(shared.clone(), rx, persist, notices, permissions));
        Self {
            shared,
            next_id: AtomicU64::new(0),
        }
    }

    /// Re-attaches to a connection a previous process opened (its agent still running on
    /// sandbox-agent): envelopes are recorded from `binding` on, and the stream resumes after SSE
    /// id `last_stream_id`. Request ids start from the clock, so they never repeat the old ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attach(
        http: reqwest::Client,
        endpoint: &Endpoint,
        agent: &str,
        local_id: &str,
        persist: Arc<dyn SessionPersistDriver>,
        notices: mpsc::Sender<SessionNotice>,
        permissions: Permissions,
        binding: Binding,
        last_stream_id: u64,
        expect_reply: Option<u64>,
    ) -> (Self, Option<oneshot::Receiver<Reply>>) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let server_id = format!("huddle-{agent}-{local_id}");
        let transport = Arc::new(Transport::new(http, endpoint, &server_id, agent, tx, true));
        let shared = Arc::new(ConnectionShared {
            id: local_id.to_string(),
            server_id,
            transport: transport.clone(),
            pending: Mutex::new(HashMap::new()),
            gone: CancellationToken::new(),
            pumped: CancellationToken::new(),
            binding: Mutex::new(Some(binding)),
            replaying: Mutex::new(None),
        });
        let conn = Self {
            shared: shared.clone(),
            next_id: AtomicU64::new(now_ms().max(0) as u64),
        };
        // Expected before the stream resumes: the reply may be the first thing it replays.
        let reply = expect_reply.map(|id| conn.expect_reply(id));
        tokio::spawn(pump(shared, rx, persist, notices, permissions));
        transport.resume_stream(last_stream_id);
        (conn, reply)
    }

    /// Whether sandbox-agent still knows the connection with this server id.
    pub(crate) async fn probe(
        http: reqwest::Client,
        endpoint: &Endpoint,
        agent: &str,
        local_id: &str,
    ) -> Result<bool, AcpError> {
        let (tx, _rx) = mpsc::channel(1);
        let server_id = format!("huddle-{agent}-{local_id}");
        Transport::new(http, endpoint, &server_id, agent, tx, true)
            .probe()
            .await
    }

    /// Registers a request id whose reply the pump is to hand over.
    fn expect_reply(&self, id: u64) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .insert(id.to_string(), tx);
        rx
    }

    /// The reply, or an error once the connection is gone.
    pub(crate) async fn wait_reply(&self, rx: oneshot::Receiver<Reply>) -> Reply {
        tokio::select! {
            reply = rx => reply.unwrap_or_else(|_| Err(AcpError::ConnectionGone("the connection closed".into()))),
            _ = self.shared.gone.cancelled() => Err(AcpError::ConnectionGone("the connection to the agent was lost".into())),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ConnectionShared> {
        &self.shared
    }

    pub(crate) fn id(&self) -> &str {
        &self.shared.id
    }

    /// The id sandbox-agent knows this connection by.
    pub(crate) fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.shared.gone.is_cancelled()
    }

    /// From now on, envelopes are recorded as events of `session_id`, numbered by `next_index`.
    pub(crate) fn bind(&self, session_id: &str, next_index: Arc<AtomicI64>) {
        *self.shared.binding.lock().expect("binding lock") = Some(Binding {
            session_id: session_id.to_string(),
            next_index,
        });
    }

    /// Sends a request and waits for its reply. `timeout` None waits as long as it takes.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Reply {
        let id = self.next_request_id();
        self.request_as(id, method, params, timeout).await
    }

    /// `session/load`: the agent's replay of its history, which comes before the answer on the
    /// stream, is skipped.
    pub(crate) async fn load_session(&self, params: Value, timeout: Duration) -> Reply {
        let id = self.next_request_id();
        *self.shared.replaying.lock().expect("replaying lock") = Some(id.to_string());
        let reply = self
            .request_as(id, super::acp::method_load_session(), params, Some(timeout))
            .await;
        *self.shared.replaying.lock().expect("replaying lock") = None;
        reply
    }

    /// The id the next request will be sent with (see [`Connection::request_as`]).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Sends a request with an id from [`Connection::next_request_id`] and waits for its reply.
    pub(crate) async fn request_as(
        &self,
        id: u64,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Reply {
        if self.is_gone() {
            return Err(AcpError::ConnectionGone(
                "the connection to the agent was lost".into(),
            ));
        }
        let rx = self.expect_reply(id);
        let envelope = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let post_timeout = timeout.map(|t| t.min(Transport::request_timeout()));
        let post = self
            .shared
            .transport
            .post(envelope, post_timeout.or(Some(Duration::from_secs(3600))));
        // The reply is taken from the event stream, while the POST may still be open: a prompt's
        // POST is held for the whole turn, and never returns when the agent's process dies.
        let exchange = async {
            tokio::pin!(post);
            let wait = self.wait_reply(rx);
            tokio::pin!(wait);
            let mut posted = false;
            loop {
                tokio::select! {
                    sent = &mut post, if !posted => {
                        posted = true;
                        match sent {
                            Ok(()) => {}
                            // A timeout on a prompt's POST is not a failure of the request,
                            // whose reply still comes on the event stream.
                            Err(AcpError::Timeout) if timeout.is_none() => {}
                            Err(e) => {
                                self.shared
                                    .pending
                                    .lock()
                                    .expect("pending lock")
                                    .remove(&id.to_string());
                                if e.is_gone() {
                                    // Known now, not only once the pump gets to it: the next
                                    // call reconnects.
                                    self.shared.gone.cancel();
                                }
                                return Err(e);
                            }
                        }
                    }
                    reply = &mut wait => return reply,
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .unwrap_or(Err(AcpError::Timeout)),
            None => exchange.await,
        }
    }

    /// Sends a notification (no reply).
    pub(crate) async fn notify(&self, method: &str, params: Value) -> Result<(), AcpError> {
        let envelope = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.shared
            .transport
            .post(envelope, Some(Transport::request_timeout()))
            .await
    }

    /// Drops the current event stream so that it resumes (used by tests of resumption).
    pub(crate) fn cut_stream(&self) {
        self.shared.transport.cut_stream();
    }

    pub(crate) async fn close(&self) {
        self.shared.gone.cancel();
        self.shared.transport.close().await;
    }

    /// Lets go of the connection and leaves it open on the server (see [`Transport::detach`]),
    /// once the pump has written what it had read: the node that re-attaches reads the session's
    /// events and stream cursor, and anything written after that would be lost to the room.
    pub(crate) async fn detach(&self) {
        self.shared.transport.detach();
        self.shared.gone.cancel();
        if tokio::time::timeout(DETACH_TIMEOUT, self.shared.pumped.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(connection = %self.shared.id, "the event pump did not end in time");
        }
    }
}

impl ConnectionShared {
    /// Answers a request the agent made.
    pub(crate) async fn respond(&self, rpc_id: Value, result: Value) -> Result<(), AcpError> {
        let envelope = json!({"jsonrpc": "2.0", "id": rpc_id, "result": result});
        self.transport
            .post(envelope, Some(Transport::request_timeout()))
            .await
    }

    async fn respond_error(&self, rpc_id: Value, code: i64, message: &str) -> Result<(), AcpError> {
        let envelope =
            json!({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}});
        self.transport
            .post(envelope, Some(Transport::request_timeout()))
            .await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.gone.cancel();
        let transport = self.shared.transport.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { transport.close().await });
        }
    }
}

enum Action {
    Reply(String, Reply),
    AgentRequest {
        rpc_id: Value,
        key: String,
        method: String,
        params: Value,
    },
    Notice(SessionNotice),
}

/// Turns the transport's stream into persisted events, in order, then tells everyone: the owner
/// through `notices`, and callers waiting for a reply.
async fn pump(
    shared: Arc<ConnectionShared>,
    mut rx: mpsc::Receiver<Inbound>,
    persist: Arc<dyn SessionPersistDriver>,
    notices: mpsc::Sender<SessionNotice>,
    permissions: Permissions,
) {
    let _pumped = shared.pumped.clone().drop_guard();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut lost_reported = false;
    loop {
        // The pump ends with its connection: the transport (which holds the sender) is kept
        // alive by `shared`, so a closed channel alone would never end it.
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = shared.gone.cancelled() => {
                while batch.len() < MAX_BATCH && let Ok(item) = rx.try_recv() {
                    batch.push(item);
                }
                if batch.is_empty() { 0 } else { batch.len() }
            }
        };
        if n == 0 {
            break;
        }
        let mut events = Vec::new();
        let mut actions = Vec::new();
        let mut cursor = None;
        {
            let mut binding = shared.binding.lock().expect("binding lock");
            for item in batch.drain(..) {
                let (envelope, sender) = match item {
                    Inbound::Outbound(v) => (v, Sender::Client),
                    Inbound::Envelope(v) => (v, Sender::Agent),
                    Inbound::Malformed { error } => {
                        tracing::warn!(connection = %shared.id, %error, "malformed envelope from sandbox-agent");
                        actions.push(Action::Notice(SessionNotice::Malformed(error)));
                        continue;
                    }
                    Inbound::Gap {
                        last_seen,
                        resumed_at,
                    } => {
                        tracing::warn!(connection = %shared.id, last_seen, resumed_at, "gap in the ACP event stream");
                        actions.push(Action::Notice(SessionNotice::StreamGap {
                            last_seen,
                            resumed_at,
                        }));
                        continue;
                    }
                    Inbound::Healed { recovered } => {
                        tracing::info!(connection = %shared.id, recovered, "healed a gap in the ACP event stream");
                        actions.push(Action::Notice(SessionNotice::StreamHealed { recovered }));
                        continue;
                    }
                    Inbound::Cursor(id) => {
                        cursor = Some(id);
                        continue;
                    }
                    Inbound::Gone(reason) => {
                        shared.gone.cancel();
                        if !lost_reported {
                            lost_reported = true;
                            actions.push(Action::Notice(SessionNotice::ConnectionLost(reason)));
                        }
                        continue;
                    }
                };
                if sender == Sender::Agent {
                    let mut replaying = shared.replaying.lock().expect("replaying lock");
                    if let Some(load) = replaying.as_deref() {
                        if envelope_method(&envelope) == Some("session/update") {
                            continue;
                        }
                        // Its answer ends the replay (it comes after the replay on the stream).
                        if is_response(&envelope) && envelope_id(&envelope).as_deref() == Some(load)
                        {
                            *replaying = None;
                        }
                    }
                }
                if let Some(b) = binding.as_mut() {
                    events.push(SessionEvent {
                        id: random_id(),
                        event_index: b.next_index.fetch_add(1, Ordering::SeqCst),
                        session_id: b.session_id.clone(),
                        created_at: now_ms(),
                        connection_id: shared.id.clone(),
                        sender,
                        payload: envelope.clone(),
                    });
                }
                if sender == Sender::Client {
                    continue;
                }
                let id = envelope_id(&envelope);
                match (envelope_method(&envelope), id) {
                    (None, Some(id)) if is_response(&envelope) => {
                        actions.push(Action::Reply(id, reply_of(&envelope)));
                    }
                    // sandbox-agent says so when the agent's process ends, and answers no request
                    // of the connection after it: they would wait forever.
                    (Some("_adapter/agent_exited"), None) if !lost_reported => {
                        lost_reported = true;
                        actions.push(Action::Notice(SessionNotice::AgentExited));
                    }
                    (Some(method), Some(id)) => actions.push(Action::AgentRequest {
                        rpc_id: envelope["id"].clone(),
                        // Agents number their requests per process: the connection makes the key unique.
                        key: format!("{}/{id}", shared.id),
                        method: method.to_string(),
                        params: envelope.get("params").cloned().unwrap_or(Value::Null),
                    }),
                    _ => {}
                }
            }
        }
        if !events.is_empty() {
            let at = cursor.map(|c| (shared.id.as_str(), c));
            // Announced only once persisted: the room never shows what its session lacks.
            if persist_with_retry(persist.as_ref(), &events, at, &shared.gone, &notices).await {
                for event in events {
                    let _ = notices.send(SessionNotice::Event(event)).await;
                }
            } else if shared.gone.is_cancelled() {
                break;
            }
        }
        for action in actions {
            match action {
                Action::Reply(id, reply) => {
                    if let Some(tx) = shared.pending.lock().expect("pending lock").remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
                Action::AgentRequest {
                    rpc_id,
                    key,
                    method,
                    params,
                } if method == "session/request_permission" => {
                    permissions.lock().expect("permissions lock").insert(
                        key.clone(),
                        PendingPermission {
                            conn: shared.clone(),
                            rpc_id: rpc_id.clone(),
                            params: params.clone(),
                        },
                    );
                    let _ = notices
                        .send(SessionNotice::PermissionRequested {
                            request_id: key,
                            rpc_id,
                            params,
                        })
                        .await;
                }
                Action::AgentRequest { rpc_id, method, .. } => {
                    // Huddle offers the agent no client-side methods (files, terminals) but permissions.
                    let conn = shared.clone();
                    tokio::spawn(async move {
                        let message = format!("Huddle does not support `{method}`");
                        if let Err(e) = conn.respond_error(rpc_id, -32601, &message).await {
                            tracing::warn!(error = %e, "could not answer the agent's request");
                        }
                    });
                }
                Action::Notice(notice) => {
                    if matches!(
                        notice,
                        SessionNotice::ConnectionLost(_) | SessionNotice::AgentExited
                    ) {
                        shared.gone.cancel();
                        fail_pending(&shared);
                        let lost: Vec<String> = {
                            let mut p = permissions.lock().expect("permissions lock");
                            let keys: Vec<String> = p
                                .iter()
                                .filter(|(_, v)| v.conn.id == shared.id)
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in &keys {
                                p.remove(k);
                            }
                            keys
                        };
                        if !lost.is_empty() {
                            let _ = notices
                                .send(SessionNotice::PermissionsCancelled(lost))
                                .await;
                        }
                    }
                    let _ = notices.send(notice).await;
                }
            }
        }
    }
    fail_pending(&shared);
}

/// A JSON-RPC response as the request's reply.
pub(crate) fn reply_of(envelope: &Value) -> Reply {
    match envelope.get("error") {
        Some(err) => Err(AcpError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            data: err.get("data").cloned(),
        }),
        None => Ok(envelope.get("result").cloned().unwrap_or(Value::Null)),
    }
}

fn fail_pending(shared: &ConnectionShared) {
    for (_, tx) in shared.pending.lock().expect("pending lock").drain() {
        let _ = tx.send(Err(AcpError::ConnectionGone(
            "the connection to the agent was lost".into(),
        )));
    }
}

/// Events are not dropped while the connection lives: a database that is down is waited for, with
/// backoff and jitter (the stream backs up meanwhile). A refused value is not retried (the driver
/// has already stored what it could), and a closed connection stops the waiting.
async fn persist_with_retry(
    persist: &dyn SessionPersistDriver,
    events: &[SessionEvent],
    cursor: Option<(&str, u64)>,
    gone: &CancellationToken,
    notices: &mpsc::Sender<SessionNotice>,
) -> bool {
    let mut delays = crate::retry::delays();
    let mut told = false;
    loop {
        // Once the connection is let go, a write that does not land at once is given up: what it
        // held stays on sandbox-agent after the persisted cursor, for the next owner to replay.
        let attempt = persist.insert_events_at(events, cursor);
        let given_up = async {
            gone.cancelled().await;
            tokio::time::sleep(LAST_WRITE_GRACE).await;
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = given_up => return false,
        };
        match result {
            Ok(()) => return true,
            // This node lost the workspace: the one that has it now carries the session on.
            Err(PersistError::NotOwner) => {
                tracing::warn!(
                    events = events.len(),
                    "session events not written: the workspace is another node's now"
                );
                return false;
            }
            Err(e) if !e.is_transient() => {
                tracing::error!(error = %e, events = events.len(), "session events refused by the database");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "could not persist session events; retrying");
                if !told {
                    // Said once, without waiting: the owner may be busy.
                    told = notices.try_send(SessionNotice::StorageDown).is_ok();
                }
                tokio::select! {
                    _ = gone.cancelled() => return false,
                    _ = tokio::time::sleep(crate::retry::next(&mut delays)) => {}
                }
            }
        }
    }
}
