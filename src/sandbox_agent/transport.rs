//! ACP over HTTP, as sandbox-agent serves it on `/v1/acp/{server_id}`: client->agent envelopes are
//! POSTed (the first one with `?agent=`), a 200 body may carry the reply; agent->client envelopes come
//! on an SSE stream that is resumed with `Last-Event-ID`. DELETE closes the connection.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::agents::AgentProcesses;
use super::error::{AcpError, Problem};
use super::records::{envelope_id, is_response, validate_envelope};

/// Where a sandbox-agent server is, and the token it wants. The token stays on the server.
#[derive(Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub token: Option<String>,
    /// The server's agent processes, when it runs on this machine as our child: closing a
    /// connection then makes sure its agent ends.
    pub agents: Option<std::sync::Arc<AgentProcesses>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What the transport hands upwards, in arrival order.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A client->agent envelope we are about to POST (recorded in order with the replies).
    Outbound(Value),
    /// An agent->client envelope, each reply exactly once whichever path brought it.
    Envelope(Value),
    /// Something arrived that is not a JSON-RPC envelope; it is reported, and nothing else is lost.
    Malformed { error: String },
    /// SSE ids jumped: the server's replay ring no longer held what we missed.
    Gap { last_seen: u64, resumed_at: u64 },
    /// SSE ids jumped, and resuming from the last id got the skipped envelopes back.
    Healed { recovered: u64 },
    /// The server no longer knows this connection (it restarted, or closed it).
    Gone(String),
    /// Everything before this came from the stream up to this SSE id (persisted with the events,
    /// so a restarted Huddle can resume the stream right after it).
    Cursor(u64),
}

/// How long a reply seen in a POST body waits for its copy on the SSE stream, which keeps order
/// with the notifications that preceded it. The body's copy only matters when the stream dropped
/// the echo (rare), so waiting long costs little; a short wait let a turn end before its last
/// words on a loaded machine (a 1 MB line ahead of them took that long to read).
const BODY_REPLY_GRACE: Duration = Duration::from_secs(1);
/// Past the grace, a reply keeps waiting while the stream is busy delivering what came before it.
const STREAM_BUSY: Duration = Duration::from_secs(1);
const BODY_REPLY_MAX_WAIT: Duration = Duration::from_secs(30);
const SEEN_REPLIES_KEPT: usize = 2048;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Transport {
    http: reqwest::Client,
    url: String,
    agent: String,
    token: Option<String>,
    posted: AtomicBool,
    inbound: mpsc::Sender<Inbound>,
    seen: Mutex<SeenReplies>,
    seen_changed: Notify,
    cancel: CancellationToken,
    /// Cuts the current SSE connection so that it resumes (tests use it to prove resumption).
    cut: Notify,
    /// When the open SSE connection last delivered something; None while none is open.
    stream_activity: Mutex<Option<Instant>>,
    agents: Option<std::sync::Arc<AgentProcesses>>,
    /// The agent processes this connection's first POST started (see [`AgentProcesses`]).
    agent_pids: Mutex<Vec<i32>>,
}

/// Where the SSE stream is: the last id delivered, and a gap being healed by a resume.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamPos {
    pub last_id: u64,
    /// `(last_seen, resumed_at)` of a gap that a resume from `last_seen` should fill.
    pub healing: Option<(u64, u64)>,
}

/// Why one SSE connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Closed,
    /// Ids jumped: reconnect at once from the last id, to get the skipped envelopes replayed.
    Gap,
}

#[derive(Default)]
struct SeenReplies {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenReplies {
    /// Records a reply id; false when it was seen already.
    fn insert(&mut self, id: String) -> bool {
        if !self.set.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_REPLIES_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl Transport {
    pub(crate) fn new(
        http: reqwest::Client,
        endpoint: &Endpoint,
        server_id: &str,
        agent: &str,
        inbound: mpsc::Sender<Inbound>,
        attached: bool,
    ) -> Self {
        Self {
            http,
            url: format!(
                "{}/v1/acp/{}",
                endpoint.base_url.trim_end_matches('/'),
                server_id
            ),
            agent: agent.to_string(),
            token: endpoint.token.clone(),
            // A connection re-attached after a restart was opened (first POST) long ago.
            posted: AtomicBool::new(attached),
            inbound,
            seen: Mutex::new(SeenReplies::default()),
            seen_changed: Notify::new(),
            cancel: CancellationToken::new(),
            cut: Notify::new(),
            stream_activity: Mutex::new(None),
            agents: endpoint.agents.clone(),
            agent_pids: Mutex::new(Vec::new()),
        }
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs one envelope. Returns once sandbox-agent has answered the POST; a reply to a request
    /// is delivered upwards through [`Inbound::Envelope`], not returned here.
    /// `timeout` is None for long-running requests (a prompt lasts as long as the turn).
    pub(crate) async fn post(
        self: &std::sync::Arc<Self>,
        envelope: Value,
        timeout: Option<Duration>,
    ) -> Result<(), AcpError> {
        if self.cancel.is_cancelled() {
            return Err(AcpError::ConnectionGone("the connection is closed".into()));
        }
        let first = !self.posted.swap(true, Ordering::SeqCst);
        let _ = self.inbound.send(Inbound::Outbound(envelope.clone())).await;
        let mut req = self.authed(self.http.post(&self.url)).json(&envelope);
        if first {
            req = req.query(&[("agent", &self.agent)]);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let res = match self.agents.as_ref().filter(|_| first) {
            Some(agents) => {
                let (res, started) = agents.starting(req.send()).await;
                *self.agent_pids.lock().expect("agent pids lock") = started;
                res
            }
            None => req.send().await,
        }
        .map_err(AcpError::from_reqwest);
        if first {
            self.clone().start_sse();
        }
        let res = res?;
        let status = res.status();
        if !status.is_success() {
            let problem = res.json::<Problem>().await.unwrap_or_default();
            let detail = problem.detail.clone().unwrap_or_default();
            // A restarted server answers a later POST as if it were the first: 404, or 400 asking
            // for the `agent` parameter that only a first POST carries.
            let unknown = status == reqwest::StatusCode::NOT_FOUND
                || (!first
                    && status == reqwest::StatusCode::BAD_REQUEST
                    && detail.contains("first POST"));
            let err = if unknown {
                AcpError::UnknownConnection(detail)
            } else {
                AcpError::Http {
                    status: status.as_u16(),
                    problem,
                }
            };
            if err.is_gone() {
                let _ = self.inbound.send(Inbound::Gone(err.to_string())).await;
            }
            return Err(err);
        }
        if status.as_u16() != 200 {
            return Ok(());
        }
        let body = res.bytes().await.map_err(AcpError::from_reqwest)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match crate::store::jsonb::lenient_parse(&String::from_utf8_lossy(&body)) {
            Ok(reply) => {
                let this = self.clone();
                // Prefer the SSE copy, which keeps order with what the agent sent before it.
                tokio::spawn(async move { this.deliver_body_reply(reply).await });
            }
            Err(e) => {
                let _ = self
                    .inbound
                    .send(Inbound::Malformed {
                        error: format!("POST reply is not JSON: {e}"),
                    })
                    .await;
            }
        }
        Ok(())
    }

    async fn deliver_body_reply(&self, reply: Value) {
        if let Some(id) = envelope_id(&reply).filter(|_| is_response(&reply)) {
            let started = Instant::now();
            loop {
                let notified = self.seen_changed.notified();
                if self.seen.lock().expect("seen lock").set.contains(&id) {
                    return;
                }
                let busy = self
                    .stream_activity
                    .lock()
                    .expect("activity lock")
                    .is_some_and(|t| t.elapsed() < STREAM_BUSY);
                let waited = started.elapsed();
                if (waited >= BODY_REPLY_GRACE && !busy) || waited >= BODY_REPLY_MAX_WAIT {
                    break;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
        self.push_inbound(reply).await;
    }

    /// Hands an agent->client envelope upwards, dropping the second copy of a reply.
    async fn push_inbound(&self, envelope: Value) {
        let envelope = unwrap_invalid_stdout(envelope);
        if let Err(error) = validate_envelope(&envelope) {
            let _ = self
                .inbound
                .send(Inbound::Malformed {
                    error: format!("{error}: {envelope}"),
                })
                .await;
            return;
        }
        if is_response(&envelope) {
            let id = envelope_id(&envelope).expect("responses have ids");
            let fresh = self.seen.lock().expect("seen lock").insert(id);
            self.seen_changed.notify_waiters();
            if !fresh {
                return;
            }
        }
        let _ = self.inbound.send(Inbound::Envelope(envelope)).await;
    }

    fn start_sse(self: std::sync::Arc<Self>) {
        tokio::spawn(async move { self.sse_loop(StreamPos::default()).await });
    }

    /// Reads the stream of an existing connection from after SSE id `last_id` (a re-attach).
    pub(crate) fn resume_stream(self: std::sync::Arc<Self>, last_id: u64) {
        let pos = StreamPos {
            last_id,
            healing: None,
        };
        tokio::spawn(async move { self.sse_loop(pos).await });
    }

    /// Whether sandbox-agent still has this connection: its stream answers 200, not 404.
    pub(crate) async fn probe(&self) -> Result<bool, AcpError> {
        let req = self
            .authed(self.http.get(&self.url))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3));
        // Only the status matters: the response (and its stream) is dropped at once.
        let res = tokio::time::timeout(Duration::from_secs(3), req.send())
            .await
            .map_err(|_| AcpError::Timeout)?
            .map_err(AcpError::from_reqwest)?;
        match res.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            s => Err(AcpError::Http {
                status: s.as_u16(),
                problem: Problem::default(),
            }),
        }
    }

    async fn sse_loop(&self, mut pos: StreamPos) {
        let mut backoff = Duration::from_millis(150);
        while !self.cancel.is_cancelled() {
            let mut req = self
                .authed(self.http.get(&self.url))
                .header("accept", "text/event-stream");
            if pos.last_id > 0 {
                req = req.header("last-event-id", pos.last_id.to_string());
            }
            let res = tokio::select! {
                _ = self.cancel.cancelled() => return,
                res = req.send() => res,
            };
            match res {
                Ok(res) if res.status() == reqwest::StatusCode::NOT_FOUND => {
                    let _ = self
                        .inbound
                        .send(Inbound::Gone(
                            "sandbox-agent no longer knows this connection".into(),
                        ))
                        .await;
                    return;
                }
                Ok(res) if res.status().is_success() => {
                    backoff = Duration::from_millis(150);
                    *self.stream_activity.lock().expect("activity lock") = Some(Instant::now());
                    let end = self.consume(res.bytes_stream(), &mut pos).await;
                    *self.stream_activity.lock().expect("activity lock") = None;
                    if end == StreamEnd::Gap {
                        continue;
                    }
                }
                Ok(res) => {
                    tracing::warn!(status = %res.status(), "ACP event stream refused; retrying")
                }
                Err(e) => tracing::debug!(error = %e, "ACP event stream unreachable; retrying"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Reads one SSE connection until it ends, is cut, or the transport closes.
    pub(crate) async fn consume<S, B, E>(&self, bytes: S, pos: &mut StreamPos) -> StreamEnd
    where
        S: futures::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let mut events = bytes.eventsource();
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return StreamEnd::Closed,
                _ = self.cut.notified() => return StreamEnd::Closed,
                next = events.next() => next,
            };
            let event = match next {
                None => return StreamEnd::Closed,
                Some(Ok(event)) => {
                    *self.stream_activity.lock().expect("activity lock") = Some(Instant::now());
                    event
                }
                Some(Err(e)) => {
                    let _ = self
                        .inbound
                        .send(Inbound::Malformed {
                            error: format!("broken SSE stream: {e}"),
                        })
                        .await;
                    return StreamEnd::Closed;
                }
            };
            if let Ok(id) = event.id.trim().parse::<u64>() {
                if id <= pos.last_id {
                    continue; // Already delivered before a reconnect.
                }
                if id > pos.last_id + 1 {
                    match pos.healing.take() {
                        // First sight of the gap: resume from the last id; the ring may hold the rest.
                        None => {
                            pos.healing = Some((pos.last_id, id));
                            return StreamEnd::Gap;
                        }
                        // Resumed, and still not there: those envelopes are gone. Say so.
                        Some(_) => {
                            let gap = Inbound::Gap {
                                last_seen: pos.last_id,
                                resumed_at: id,
                            };
                            let _ = self.inbound.send(gap).await;
                        }
                    }
                } else if let Some((last_seen, resumed_at)) = pos.healing.take() {
                    let recovered = resumed_at - last_seen - 1;
                    let _ = self.inbound.send(Inbound::Healed { recovered }).await;
                }
                pos.last_id = id;
            }
            if event.event != "message" || event.data.trim().is_empty() {
                continue;
            }
            match crate::store::jsonb::lenient_parse(&event.data) {
                Ok(envelope) => {
                    self.push_inbound(envelope).await;
                    let _ = self.inbound.send(Inbound::Cursor(pos.last_id)).await;
                }
                Err(e) => {
                    let mut data = event.data;
                    data.truncate(200);
                    let _ = self
                        .inbound
                        .send(Inbound::Malformed {
                            error: format!("SSE data is not JSON ({e}): {data}"),
                        })
                        .await;
                }
            }
        }
    }

    /// Drops the current SSE connection; the loop resumes it with `Last-Event-ID`.
    pub(crate) fn cut_stream(&self) {
        self.cut.notify_waiters();
    }

    /// Stops the SSE loop and DELETEs the connection on the server (a 404 is fine: it is gone).
    /// Stops reading and sending without closing the connection on the server: its agent goes
    /// on for the node that takes the session over.
    pub(crate) fn detach(&self) {
        self.cancel.cancel();
    }

    pub(crate) async fn close(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        self.cancel.cancel();
        if !self.posted.load(Ordering::SeqCst) {
            return;
        }
        let req = self
            .authed(self.http.delete(&self.url))
            .timeout(Duration::from_secs(2));
        if let Err(e) = req.send().await {
            tracing::debug!(error = %e, "ACP DELETE failed; the server may be gone already");
        }
        // In a task of its own: a caller that stops waiting does not leave the agent half-ended.
        let pids = std::mem::take(&mut *self.agent_pids.lock().expect("agent pids lock"));
        if let Some(agents) = self.agents.clone().filter(|_| !pids.is_empty()) {
            tokio::spawn(async move { agents.end(pids).await });
        }
    }

    pub(crate) fn request_timeout() -> Duration {
        REQUEST_TIMEOUT
    }
}

/// sandbox-agent hands on an agent's stdout line that is not valid JSON as an
/// `_adapter/invalid_stdout` notification with the line in `raw`. A line that only fails for lone
/// UTF-16 surrogates (an agent echoing binary data) is still the agent's message: it is read
/// leniently (each lone surrogate as U+FFFD), with the original line kept beside it.
fn unwrap_invalid_stdout(envelope: Value) -> Value {
    if envelope.get("method").and_then(Value::as_str) != Some("_adapter/invalid_stdout") {
        return envelope;
    }
    let Some(raw) = envelope.pointer("/params/raw").and_then(Value::as_str) else {
        return envelope;
    };
    match crate::store::jsonb::lenient_parse(raw) {
        Ok(inner) if validate_envelope(&inner).is_ok() => inner,
        _ => envelope,
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> (std::sync::Arc<Transport>, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(64);
        let endpoint = Endpoint {
            base_url: "http://127.0.0.1:9".into(),
            token: None,
            agents: None,
        };
        (
            std::sync::Arc::new(Transport::new(
                reqwest::Client::new(),
                &endpoint,
                "s",
                "mock",
                tx,
                false,
            )),
            rx,
        )
    }

    /// The next message that is not a cursor marker.
    fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Result<Inbound, mpsc::error::TryRecvError> {
        loop {
            match rx.try_recv() {
                Ok(Inbound::Cursor(_)) => continue,
                other => return other,
            }
        }
    }

    async fn feed(t: &Transport, text: &'static str, pos: &mut StreamPos) -> StreamEnd {
        let chunks: Vec<Result<&[u8], std::io::Error>> = vec![Ok(text.as_bytes())];
        t.consume(futures::stream::iter(chunks), pos).await
    }

    #[tokio::test]
    async fn sse_garbage_is_reported_and_nothing_else_is_lost() {
        let (t, mut rx) = transport();
        let mut pos = StreamPos::default();
        feed(
            &t,
            "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"a\"}\n\n\
             id: 2\nevent: message\ndata: this is not json\n\n\
             id: 3\nevent: message\ndata: {\"no\":\"jsonrpc\"}\n\n\
             id: 4\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"b\"}\n\n",
            &mut pos,
        )
        .await;
        let mut got = Vec::new();
        while let Ok(i) = recv(&mut rx) {
            got.push(i);
        }
        assert!(matches!(&got[0], Inbound::Envelope(v) if v["method"] == "a"));
        assert!(matches!(&got[1], Inbound::Malformed { error } if error.contains("not JSON")));
        assert!(matches!(&got[2], Inbound::Malformed { error } if error.contains("jsonrpc")));
        assert!(matches!(&got[3], Inbound::Envelope(v) if v["method"] == "b"));
        assert_eq!(got.len(), 4);
        assert_eq!(pos.last_id, 4);
    }

    #[tokio::test]
    async fn a_gap_is_healed_by_resuming_or_else_reported() {
        let (t, mut rx) = transport();
        let mut pos = StreamPos {
            last_id: 2,
            healing: None,
        };
        let jump = "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"old\"}\n\n\
                    id: 5\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"new\"}\n\n";
        // Ids jump from 2 to 5: the connection is dropped to resume from 2, nothing delivered yet.
        assert_eq!(feed(&t, jump, &mut pos).await, StreamEnd::Gap);
        assert!(recv(&mut rx).is_err());
        // The resume replays 3, 4, 5: healed.
        let replay = "id: 3\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"m3\"}\n\n\
                      id: 4\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"m4\"}\n\n";
        assert_eq!(feed(&t, replay, &mut pos).await, StreamEnd::Closed);
        assert!(matches!(
            recv(&mut rx),
            Ok(Inbound::Healed { recovered: 2 })
        ));
        assert!(matches!(recv(&mut rx), Ok(Inbound::Envelope(v)) if v["method"] == "m3"));
        assert!(matches!(recv(&mut rx), Ok(Inbound::Envelope(v)) if v["method"] == "m4"));
        // Another jump, and the resume cannot fill it: reported, and the stream goes on.
        let far = "id: 9\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"m9\"}\n\n";
        assert_eq!(feed(&t, far, &mut pos).await, StreamEnd::Gap);
        assert_eq!(feed(&t, far, &mut pos).await, StreamEnd::Closed);
        assert!(matches!(
            recv(&mut rx),
            Ok(Inbound::Gap {
                last_seen: 4,
                resumed_at: 9
            })
        ));
        assert!(matches!(recv(&mut rx), Ok(Inbound::Envelope(v)) if v["method"] == "m9"));
        assert!(recv(&mut rx).is_err());
    }

    #[tokio::test]
    async fn a_reply_is_delivered_once() {
        let (t, mut rx) = transport();
        let reply = serde_json::json!({"jsonrpc":"2.0","id":9,"result":{}});
        t.push_inbound(reply.clone()).await;
        t.deliver_body_reply(reply).await;
        assert!(matches!(recv(&mut rx), Ok(Inbound::Envelope(_))));
        assert!(recv(&mut rx).is_err());
    }
}
