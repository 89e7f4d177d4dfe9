//! Finds or wakes the one actor of each thread, under its workspace's ownership lease in Postgres
//! so that a second Huddle process on the same database never runs a second actor for any of its
//! threads. The awake threads of a workspace share its lease and its sandbox ([`WorkspaceAwake`]).
//! Calls carry a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::broadcast;

use super::RoomKey;
use super::action::Action;
use super::actor::Actor;
use super::handle::{Command, Reply, RoomError, RoomHandle, Subscription};
use crate::model::{
    Member, ThreadPulse, ThreadStatus, WorkspaceInfo, is_valid_thread_id, is_valid_workspace_id,
};
use crate::sandbox::{SandboxEvent, Sandboxes, WorkspaceSandbox};
use crate::store::{self, WorkspaceRow, leases};

const MAILBOX: usize = 256;
/// How long a workspace found owned by another node is taken to be so without asking again.
const ELSEWHERE_KEPT: Duration = Duration::from_millis(250);
/// How long a caller waits for an actor's answer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long an action may look for the workspace's owner (one that died frees its lease within
/// [`leases::LEASE_TTL`]), and wait for its answer there.
const FORWARD_DEADLINE: Duration = Duration::from_secs(8);
/// How long shutdown waits for the actors to close their sessions and flush their logs.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);
/// How long stopping a workspace's sandbox may take (SIGTERM, a grace period, SIGKILL).
const SANDBOX_STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// How often a node says again that the people streaming rooms it follows are there (the owner
/// forgets them after `presence::REMOTE_TTL` without it, as when the node died).
const REMOTE_PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// A person present at the owner of a room this node follows; leaves when dropped.
pub(crate) struct RemotePresence {
    registry: Registry,
    key: RoomKey,
    token: String,
}

impl Drop for RemotePresence {
    fn drop(&mut self) {
        {
            let mut present = self
                .registry
                .inner
                .remote_present
                .lock()
                .expect("registry lock");
            let Some(entry) = present.get_mut(&self.token) else {
                return;
            };
            entry.2 -= 1;
            if entry.2 > 0 {
                return;
            }
            present.remove(&self.token);
        }
        let registry = self.registry.clone();
        let key = self.key.clone();
        let token = std::mem::take(&mut self.token);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _: Result<(), _> = registry.run(&key, Action::Leave { token }).await;
            });
        }
    }
}

/// What the awake threads of one workspace share: its sandbox and its lease.
pub(super) struct WorkspaceAwake {
    pub(super) sandbox: Arc<WorkspaceSandbox>,
    /// What happens to the sandbox, for every awake thread to say.
    pub(super) events: broadcast::Sender<SandboxEvent>,
    /// Cancelled when another process took the lease.
    pub(super) lease_lost: CancellationToken,
    /// The lease, as this awake period holds it (its writes are fenced with it).
    pub(super) held: leases::Held,
    /// Ends the heartbeat and the sandbox's watchdog.
    stop: CancellationToken,
}

/// A workspace's shared part and how many of its threads are awake; locked while it is made
/// or taken apart, so that a thread waking meanwhile waits.
#[derive(Default)]
struct Gate {
    awake: Option<Arc<WorkspaceAwake>>,
    threads: usize,
    /// A thread left with work in flight as the node stops: the lease is handed over.
    hand_over: bool,
}

/// What the actors need from the server.
pub struct RoomDeps {
    pub pool: PgPool,
    /// Where leases are renewed: connections of their own ([`crate::store::heartbeat_pool`]).
    pub beats: PgPool,
    /// Where each workspace's agent runs.
    pub sandboxes: Sandboxes,
    /// How long a room with nobody in it and nothing running stays awake.
    pub idle_sleep: Duration,
    /// Where other nodes reach this one (`HUDDLE_NODE_URL`): the actions they forward to the
    /// rooms it owns.
    pub node_url: Option<String>,
    /// Where each workspace's working directory is (`<dir>/<workspace id>`): the agent's `cwd`.
    pub workspaces_dir: std::path::PathBuf,
    /// Prompts that may wait behind a running turn.
    pub max_queue: usize,
    /// Where owners may pick a workspace's directory: a picked one is checked to be under it
    /// again at every session start (it may have been swapped for a link since).
    pub projects_root: Option<std::path::PathBuf>,
    /// This node among the others: whether any other is alive (one that could take a workspace
    /// over, so a node cut off from Postgres lets its workspaces go).
    pub nodes: crate::cluster::counts::NodeCounts,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    deps: RoomDeps,
    /// The way to the owners of rooms this node does not own.
    forwarder: crate::cluster::forward::Forwarder,
    /// The rooms this node follows (their streams here; another node owns them).
    followers: crate::cluster::follow::Followers,
    /// People streaming here rooms that other nodes own, present there: by token (one per room
    /// and person), with how many of their streams are open here.
    remote_present: Mutex<HashMap<String, (RoomKey, Member, usize)>>,
    /// Workspaces found owned by another live node, and when.
    elsewhere: quick_cache::sync::Cache<String, std::time::Instant>,
    /// Whether the task that keeps them present runs.
    refreshing: std::sync::atomic::AtomicBool,
    /// This process, as the owner of leases.
    owner: String,
    /// The awake threads, by thread id.
    actors: Mutex<HashMap<String, RoomHandle>>,
    /// One awake period per thread at a time (see [`Registry::awake_period`]).
    awake: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What the awake threads of each workspace share, by workspace id.
    workspaces: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Gate>>>>,
    /// Thread-list changes of each workspace, for its streams.
    pulses: Mutex<HashMap<String, broadcast::Sender<ThreadPulse>>>,
    /// Whether each agent offers to fork its sessions, as its last session said.
    forks: Mutex<HashMap<String, bool>>,
    /// The status of each awake thread, as its actor last said it.
    statuses: Mutex<HashMap<String, (ThreadStatus, Option<String>)>>,
    /// Workspaces being deleted or moved: they do not wake meanwhile.
    retiring: Mutex<std::collections::HashSet<String>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Registry {
    pub fn new(deps: RoomDeps) -> Self {
        let owner = leases::owner_id();
        let shutdown = CancellationToken::new();
        Self {
            inner: Arc::new(Inner {
                followers: crate::cluster::follow::Followers::new(
                    deps.pool.clone(),
                    shutdown.clone(),
                ),
                forwarder: crate::cluster::forward::Forwarder::new(deps.pool.clone()),
                deps,
                owner,
                actors: Mutex::new(HashMap::new()),
                retiring: Mutex::new(Default::default()),
                awake: Mutex::new(HashMap::new()),
                workspaces: Mutex::new(HashMap::new()),
                pulses: Mutex::new(HashMap::new()),
                statuses: Mutex::new(HashMap::new()),
                forks: Mutex::new(HashMap::new()),
                remote_present: Mutex::new(HashMap::new()),
                elsewhere: quick_cache::sync::Cache::new(10_000),
                refreshing: Default::default(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Connections of their own, for the beats that say this node is alive and well.
    pub fn beats(&self) -> &PgPool {
        &self.inner.deps.beats
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.deps.pool
    }

    pub fn sandboxes(&self) -> &Sandboxes {
        &self.inner.deps.sandboxes
    }

    /// The working directory of a workspace: where its agent runs.
    pub fn projects_root(&self) -> Option<&std::path::Path> {
        self.inner.deps.projects_root.as_deref()
    }

    pub fn working_dir(&self, workspace_id: &str) -> std::path::PathBuf {
        self.inner.deps.workspaces_dir.join(workspace_id)
    }

    pub(super) fn max_queue(&self) -> usize {
        self.inner.deps.max_queue
    }

    pub(super) fn idle_sleep(&self) -> Duration {
        self.inner.deps.idle_sleep
    }

    pub(super) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// How many actors are awake.
    pub fn awake(&self) -> usize {
        self.actors().values().filter(|h| !h.is_closed()).count()
    }

    fn actors(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        self.inner.actors.lock().expect("registry lock")
    }

    /// The live actor of a thread, woken if needed. Unknown workspaces and threads are refused,
    /// and so are workspaces another live Huddle process owns.
    async fn handle(&self, key: &RoomKey) -> Result<RoomHandle, RoomError> {
        let unknown = || RoomError::UnknownWorkspace(crate::error::quoted(&key.workspace));
        if !is_valid_workspace_id(&key.workspace) || !is_valid_thread_id(&key.thread) {
            return Err(unknown());
        }
        if let Some(h) = self.live_handle(&key.thread) {
            return Ok(h);
        }
        if self.retiring().contains(&key.workspace) {
            return Err(RoomError::Deleting);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(RoomError::Stopped);
        }
        // Just found owned by another live node: no need to ask Postgres again for each of a
        // burst of requests (a thousand streams opening here).
        if self
            .inner
            .elsewhere
            .get(&key.workspace)
            .is_some_and(|at| at.elapsed() < ELSEWHERE_KEPT)
        {
            return Err(RoomError::OwnedElsewhere);
        }
        let pool = self.pool();
        let row = store::find_workspace(pool, &key.workspace)
            .await?
            .ok_or_else(unknown)?;
        let thread = store::threads::find(pool, &key.thread)
            .await?
            .filter(|t| t.workspace_id == key.workspace)
            .ok_or_else(|| {
                RoomError::NotFound("There is no such thread in this workspace.".into())
            })?;
        let url = self.inner.deps.node_url.as_deref();
        if leases::acquire(pool, &row.id, &self.inner.owner, url)
            .await?
            .is_none()
            && leases::take_from_dead(pool, &row.id, &self.inner.owner, url)
                .await?
                .is_none()
        {
            self.inner
                .elsewhere
                .insert(key.workspace.clone(), std::time::Instant::now());
            return Err(RoomError::OwnedElsewhere);
        }
        let mut actors = self.actors();
        if let Some(h) = actors.get(&key.thread).filter(|h| !h.is_closed()) {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = RoomHandle {
            tx,
            workspace: Arc::from(key.workspace.as_str()),
        };
        actors.insert(key.thread.clone(), handle.clone());
        drop(actors);
        let registry = self.clone();
        let me = handle.clone();
        self.inner.tasks.spawn(async move {
            let id = thread.id.clone();
            let workspace = row.id.clone();
            // A panic stays inside this task: the others run on, and the next call starts it again.
            let result =
                tokio::spawn(Actor::run(row, thread, registry.clone(), me.clone(), rx)).await;
            if let Err(e) = result {
                tracing::error!(workspace = %workspace, thread = %id, error = %e, "thread actor crashed");
                registry.leave_workspace(&workspace, false, false).await;
                // Its lists show it asleep, not stuck at what it was doing.
                registry.pulse(
                    &workspace,
                    ThreadPulse {
                        thread_id: id.clone(),
                        status: Some(ThreadStatus::Idle),
                        started_by: None,
                    },
                );
            }
            registry.forget(&id, &me);
        });
        Ok(handle)
    }

    /// The awake threads of a workspace.
    fn handles_of(&self, workspace: &str) -> Vec<RoomHandle> {
        self.actors()
            .values()
            .filter(|h| &*h.workspace == workspace && !h.is_closed())
            .cloned()
            .collect()
    }

    /// A thread of the workspace woke: it shares the workspace's lease and sandbox, made for the
    /// first awake thread. None when another process holds the lease.
    pub(super) async fn join_workspace(
        &self,
        row: &WorkspaceRow,
    ) -> Result<Arc<WorkspaceAwake>, RoomError> {
        let gate = self.gate(&row.id);
        let mut gate = gate.lock().await;
        if let Some(awake) = gate.awake.clone() {
            gate.threads += 1;
            return Ok(awake);
        }
        // The previous awake period may have released the lease on its way out.
        let held = leases::Held {
            owner: self.inner.owner.clone(),
            epoch: self.reacquire_lease(&row.id).await?,
        };
        let stop = CancellationToken::new();
        let lease_lost = CancellationToken::new();
        self.spawn_heartbeat(&row.id, held.epoch, lease_lost.clone(), stop.clone());
        let (events, _) = broadcast::channel(64);
        let (sandbox_tx, mut sandbox_rx) = mpsc::unbounded_channel();
        let here = match &row.working_dir {
            Some(dir) => dir.into(),
            None => self.working_dir(&row.id),
        };
        let cwd = self.sandboxes().working_dir(row, here);
        let sandbox = self
            .sandboxes()
            .open(row, cwd, sandbox_tx, stop.clone(), &held);
        // Every awake thread hears what happens to the sandbox.
        let fan_out = events.clone();
        tokio::spawn(async move {
            while let Some(event) = sandbox_rx.recv().await {
                let _ = fan_out.send(event);
            }
        });
        let awake = Arc::new(WorkspaceAwake {
            sandbox,
            events,
            lease_lost,
            held,
            stop,
        });
        gate.awake = Some(awake.clone());
        gate.threads = 1;
        Ok(awake)
    }

    /// A thread of the workspace fell asleep: the last one stops the sandbox and releases the
    /// lease (unless it was lost; handed over when a thread had work in flight as this node
    /// stopped). A thread waking meanwhile waits for that.
    pub(super) async fn leave_workspace(&self, workspace: &str, lease_lost: bool, hand_over: bool) {
        let gate = self.gate(workspace);
        let mut gate = gate.lock().await;
        gate.threads = gate.threads.saturating_sub(1);
        gate.hand_over |= hand_over;
        if gate.threads > 0 {
            return;
        }
        let hand_over = std::mem::take(&mut gate.hand_over);
        let Some(awake) = gate.awake.take() else {
            return;
        };
        awake.stop.cancel();
        // The sandbox sleeps with the workspace (its SIGTERM grace, then SIGKILL, is bounded).
        if tokio::time::timeout(SANDBOX_STOP_TIMEOUT, awake.sandbox.stop())
            .await
            .is_err()
        {
            tracing::warn!(workspace = %workspace, "the sandbox did not stop in time");
        }
        if !lease_lost && !awake.lease_lost.is_cancelled() {
            self.release_lease(workspace, hand_over).await;
        }
    }

    fn gate(&self, workspace: &str) -> Arc<tokio::sync::Mutex<Gate>> {
        self.inner
            .workspaces
            .lock()
            .expect("registry lock")
            .entry(workspace.to_string())
            .or_default()
            .clone()
    }

    /// The thread-list changes of a workspace, live.
    pub fn thread_pulses(&self, workspace: &str) -> broadcast::Receiver<ThreadPulse> {
        self.pulse_sender(workspace).subscribe()
    }

    /// An agent's session said whether it can fork sessions.
    pub(super) fn learn_fork(&self, agent: &str, can: bool) {
        self.inner
            .forks
            .lock()
            .expect("registry lock")
            .insert(agent.to_string(), can);
    }

    /// Whether an agent forks its sessions (`None`: no session of it was opened yet).
    pub fn can_fork(&self, agent: &str) -> Option<bool> {
        self.inner
            .forks
            .lock()
            .expect("registry lock")
            .get(agent)
            .copied()
    }

    /// What a thread is doing (`idle` when it sleeps).
    pub fn thread_status(&self, thread: &str) -> (ThreadStatus, Option<String>) {
        self.inner
            .statuses
            .lock()
            .expect("registry lock")
            .get(thread)
            .cloned()
            .unwrap_or_default()
    }

    /// Tells the workspace's streams that a thread changed.
    pub fn pulse(&self, workspace: &str, pulse: ThreadPulse) {
        if let Some(status) = pulse.status {
            let mut statuses = self.inner.statuses.lock().expect("registry lock");
            if status == ThreadStatus::Idle {
                statuses.remove(&pulse.thread_id);
            } else {
                statuses.insert(pulse.thread_id.clone(), (status, pulse.started_by.clone()));
            }
        }
        let _ = self.pulse_sender(workspace).send(pulse);
    }

    fn pulse_sender(&self, workspace: &str) -> broadcast::Sender<ThreadPulse> {
        self.inner
            .pulses
            .lock()
            .expect("registry lock")
            .entry(workspace.to_string())
            .or_insert_with(|| broadcast::channel(256).0)
            .clone()
    }

    fn live_handle(&self, id: &str) -> Option<RoomHandle> {
        self.actors().get(id).filter(|h| !h.is_closed()).cloned()
    }

    pub(super) fn forget(&self, id: &str, handle: &RoomHandle) {
        let mut actors = self.actors();
        if actors.get(id).is_some_and(|h| h.same(handle)) {
            actors.remove(id);
        }
    }

    /// The sleep handshake: under the registry lock, an actor with an empty mailbox leaves the
    /// registry and closes its mailbox, so a call either got in before (and it stays awake) or
    /// finds no actor and wakes a new one.
    pub(super) fn forget_if_idle(
        &self,
        id: &str,
        handle: &RoomHandle,
        mailbox: &mut mpsc::Receiver<Command>,
    ) -> bool {
        let mut actors = self.actors();
        if !mailbox.is_empty() {
            return false;
        }
        if actors.get(id).is_some_and(|h| h.same(handle)) {
            actors.remove(id);
        }
        mailbox.close();
        true
    }

    /// Renews the workspace's lease until `stop`; tells its threads when it is lost.
    fn spawn_heartbeat(
        &self,
        id: &str,
        epoch: i64,
        lease_lost: CancellationToken,
        stop: CancellationToken,
    ) {
        let pool = self.inner.deps.beats.clone();
        let owner = self.inner.owner.clone();
        let nodes = self.inner.deps.nodes.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            // When the last renewal that held was sent: the lease lasts at least LEASE_TTL from
            // then, as Postgres stamped it after.
            let mut renewed = tokio::time::Instant::now();
            // Cut off from Postgres (or too slow to reach it): before the lease can expire and
            // another node take the workspace over, this one lets go of it and stops writing,
            // so two never carry one turn on. A node alone rides an outage out instead: nobody
            // could take over, and what it holds in memory is written once Postgres is back.
            let fence = |renewed: tokio::time::Instant| {
                tracing::warn!(
                    workspace = %id,
                    unrenewed_ms = renewed.elapsed().as_millis() as u64,
                    "could not renew the workspace lease in time; letting the workspace go"
                );
                lease_lost.cancel();
            };
            let fence_at = |renewed: tokio::time::Instant| {
                let at = nodes.others_alive().then_some(renewed + leases::SELF_FENCE);
                async move {
                    match at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = fence_at(renewed) => return fence(renewed),
                    _ = tokio::time::sleep(leases::HEARTBEAT) => {}
                }
                let sent = tokio::time::Instant::now();
                let renew =
                    tokio::time::timeout(leases::HEARTBEAT, leases::renew(&pool, &id, &owner));
                // A renewal that held counts even when this task runs late (a busy node): the
                // lease was still this node's when Postgres extended it.
                tokio::select! {
                    biased;
                    r = renew => match r {
                        Ok(Ok(Some(e))) if e == epoch => renewed = sent,
                        Ok(Ok(_)) => {
                            tracing::error!(workspace = %id, "another Huddle process took this workspace");
                            lease_lost.cancel();
                            return;
                        }
                        _ => tracing::warn!(
                            workspace = %id,
                            unrenewed_ms = renewed.elapsed().as_millis() as u64,
                            "could not renew the workspace lease; retrying"
                        ),
                    },
                    _ = stop.cancelled() => return,
                    _ = fence_at(renewed) => return fence(renewed),
                }
            }
        });
    }

    pub(super) async fn release_lease(&self, id: &str, hand_over: bool) {
        let release = async {
            match hand_over {
                true => leases::hand_over(self.pool(), id, &self.inner.owner).await,
                false => leases::release(self.pool(), id, &self.inner.owner).await,
            }
        };
        match tokio::time::timeout(Duration::from_secs(1), release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(workspace = %id, error = %e, "could not release the lease; it expires")
            }
            Err(_) => tracing::warn!(workspace = %id, "releasing the lease timed out; it expires"),
        }
    }

    /// Sends a command and waits for its reply within the deadline; a call that meets a sleeping
    /// actor goes to a new one.
    async fn call<T>(
        &self,
        key: &RoomKey,
        make: impl Fn(Reply<T>) -> Command,
    ) -> Result<T, RoomError> {
        let attempt = async {
            for _ in 0..3 {
                let handle = self.handle(key).await?;
                let (tx, rx) = oneshot::channel();
                if handle.tx.send(make(tx)).await.is_err() {
                    self.forget(&key.thread, &handle);
                    continue;
                }
                match rx.await {
                    Ok(Err(RoomError::Asleep)) => continue,
                    Ok(result) => return result,
                    Err(_) => return Err(RoomError::Stopped),
                }
            }
            Err(RoomError::Stopped)
        };
        tokio::time::timeout(CALL_DEADLINE, attempt)
            .await
            .unwrap_or(Err(RoomError::Timeout))
    }

    pub async fn info(&self, key: &RoomKey) -> Result<WorkspaceInfo, RoomError> {
        self.run(key, Action::Info).await
    }

    pub fn forwarder(&self) -> &crate::cluster::forward::Forwarder {
        &self.inner.forwarder
    }

    /// Carries an action out here when this node owns (or can take) the workspace, else at the
    /// node that owns it; while nobody can (an owner that died, before its lease expires), tries
    /// again until the forwarding deadline.
    async fn run<T: serde::de::DeserializeOwned>(
        &self,
        key: &RoomKey,
        action: Action,
    ) -> Result<T, RoomError> {
        let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
        loop {
            let result = match self.act(key, action.clone()).await {
                Err(RoomError::OwnedElsewhere) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    self.inner
                        .forwarder
                        .send(key, &action, left.max(Duration::from_millis(100)))
                        .await
                }
                other => other,
            };
            match result {
                Err(RoomError::OwnedElsewhere) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => {
                    return other.and_then(|v| {
                        serde_json::from_value(v).map_err(|e| {
                            tracing::error!(error = %e, "an action's answer has another shape");
                            RoomError::Stopped
                        })
                    });
                }
            }
        }
    }

    /// Carries an action out on this node: [`RoomError::OwnedElsewhere`] when another node owns
    /// the workspace. Its answer as JSON (what a forwarded call returns).
    pub async fn act(&self, key: &RoomKey, action: Action) -> Result<serde_json::Value, RoomError> {
        fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, RoomError> {
            serde_json::to_value(v).map_err(|_| RoomError::Stopped)
        }
        match action {
            Action::Info => json(self.call(key, Command::Info).await?),
            Action::WorkspaceRenamed { member, name } => {
                let make = |reply| Command::WorkspaceRenamed {
                    member: member.clone(),
                    name: name.clone(),
                    reply,
                };
                for handle in self.handles_of(&key.workspace) {
                    let (tx, _) = oneshot::channel();
                    let _ = handle.tx.try_send(make(tx));
                }
                if self.live_handle(&key.thread).is_some() {
                    return json(());
                }
                json(self.call(key, make).await?)
            }
            Action::Prompt {
                member,
                text,
                team_only,
                images,
                mentions,
            } => json(
                self.call(key, |reply| Command::Prompt {
                    member: member.clone(),
                    text: text.clone(),
                    team_only,
                    images: images.clone(),
                    mentions: mentions.clone(),
                    reply,
                })
                .await?,
            ),
            Action::Cancel {
                member,
                clear_queue,
            } => json(
                self.call(key, |reply| Command::Cancel {
                    member: member.clone(),
                    clear_queue,
                    reply,
                })
                .await?,
            ),
            Action::SetOption {
                member,
                config_id,
                value,
            } => json(
                self.call(key, |reply| Command::SetOption {
                    member: member.clone(),
                    config_id: config_id.clone(),
                    value: value.clone(),
                    reply,
                })
                .await?,
            ),
            Action::RemoveQueued {
                member,
                prompt_seq,
                any,
            } => json(
                self.call(key, |reply| Command::RemoveQueued {
                    member: member.clone(),
                    prompt_seq,
                    any,
                    reply,
                })
                .await?,
            ),
            Action::Permission {
                member,
                request_id,
                option_id,
            } => json(
                self.call(key, |reply| Command::Permission {
                    member: member.clone(),
                    request_id: request_id.clone(),
                    option_id: option_id.clone(),
                    reply,
                })
                .await?,
            ),
            Action::Typing { member } => {
                let handle = self.handle(key).await?;
                let _ = handle.tx.try_send(Command::Typing { member });
                json(())
            }
            Action::Join { member, token } => json(
                self.call(key, |reply| Command::RemoteJoin {
                    member: member.clone(),
                    token: token.clone(),
                    reply,
                })
                .await?,
            ),
            Action::Leave { token } => {
                if let Some(handle) = self.live_handle(&key.thread) {
                    let _ = handle.tx.try_send(Command::RemoteLeave { token });
                }
                json(())
            }
            Action::Notice { level, message } => {
                let handle = self.handle(key).await?;
                handle
                    .tx
                    .send(Command::Notice { level, message })
                    .await
                    .map_err(|_| RoomError::Stopped)?;
                json(())
            }
            Action::Retire => {
                self.stop_threads(&key.workspace).await;
                self.retiring().remove(&key.workspace);
                json(())
            }
        }
    }

    /// The facts of each awake thread of a workspace, without waking any.
    pub async fn awake_infos(&self, workspace: &str) -> Vec<WorkspaceInfo> {
        let mut infos = Vec::new();
        for handle in self.handles_of(workspace) {
            let (tx, rx) = oneshot::channel();
            if handle.tx.try_send(Command::Info(tx)).is_err() {
                continue;
            }
            if let Ok(Ok(Ok(info))) = tokio::time::timeout(Duration::from_millis(500), rx).await {
                infos.push(info);
            }
        }
        infos
    }

    /// The status of a workspace with awake threads (`working` when any thread works, else the
    /// first one's), without waking one that sleeps.
    pub async fn status_if_awake(&self, workspace: &str) -> Option<String> {
        let infos = self.awake_infos(workspace).await;
        if infos.iter().any(|i| i.status == "working") {
            return Some("working".into());
        }
        infos.into_iter().next().map(|i| i.status)
    }

    /// The owner renamed the workspace: the thread `key` (and every other awake one) says so,
    /// and shows the new name.
    pub async fn workspace_renamed(
        &self,
        key: &RoomKey,
        member: Member,
        name: String,
    ) -> Result<(), RoomError> {
        self.run(key, Action::WorkspaceRenamed { member, name })
            .await
    }

    /// A person's message: a prompt for the agent, or with `team_only` for the team (the agent
    /// gets it as context with the next prompt).
    pub async fn prompt(
        &self,
        key: &RoomKey,
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<crate::model::ImageRef>,
        mentions: Vec<crate::model::Mention>,
    ) -> Result<i64, RoomError> {
        let action = Action::Prompt {
            member,
            text,
            team_only,
            images,
            mentions,
        };
        self.run(key, action).await
    }

    /// Stops the running turn; with `clear_queue`, the prompts waiting behind it go too.
    pub async fn cancel(
        &self,
        key: &RoomKey,
        member: Member,
        clear_queue: bool,
    ) -> Result<(), RoomError> {
        self.run(
            key,
            Action::Cancel {
                member,
                clear_queue,
            },
        )
        .await
    }

    /// Changes one of the agent session's options (mode, model), for everyone in the room.
    pub async fn set_option(
        &self,
        key: &RoomKey,
        member: Member,
        config_id: String,
        value: String,
    ) -> Result<(), RoomError> {
        let action = Action::SetOption {
            member,
            config_id,
            value,
        };
        self.run(key, action).await
    }

    /// Takes a waiting prompt off the queue: its author may, and with `any` (the owner) anyone's.
    pub async fn remove_queued(
        &self,
        key: &RoomKey,
        member: Member,
        prompt_seq: i64,
        any: bool,
    ) -> Result<(), RoomError> {
        let action = Action::RemoveQueued {
            member,
            prompt_seq,
            any,
        };
        self.run(key, action).await
    }

    pub async fn answer_permission(
        &self,
        key: &RoomKey,
        member: Member,
        request_id: String,
        option_id: String,
    ) -> Result<(), RoomError> {
        let action = Action::Permission {
            member,
            request_id,
            option_id,
        };
        self.run(key, action).await
    }

    /// Joins the room's live stream (anonymously with `None`: counted, not listed).
    pub async fn subscribe(
        &self,
        key: &RoomKey,
        member: Option<Member>,
    ) -> Result<Subscription, RoomError> {
        let own = self
            .call(key, |reply| Command::Connect {
                member: member.clone(),
                reply,
            })
            .await;
        if !matches!(own, Err(RoomError::OwnedElsewhere)) {
            return own;
        }
        // Another node owns the workspace: this one follows the room's log, and its person is
        // present at the owner.
        let following = self.inner.followers.follow(&key.thread).await?;
        let present = member.map(|member| self.present_remotely(key, member));
        Ok(Subscription {
            conn_id: 0,
            head: following.head,
            live: Some(following.live),
            online: Some(following.online),
            leave: super::handle::Leave::Follower(following.guard, present),
        })
    }

    /// Makes a person streaming here a room another node owns present there, and keeps saying
    /// so every [`REMOTE_PRESENCE_REFRESH`] (to whichever node owns it then) until the stream ends.
    fn present_remotely(&self, key: &RoomKey, member: Member) -> RemotePresence {
        // One presence per room and person, however many of their streams are open here.
        let token = format!("{}#{}#{}", self.inner.owner, key.thread, member.user_id);
        let first = {
            let mut present = self.inner.remote_present.lock().expect("registry lock");
            let entry = present
                .entry(token.clone())
                .or_insert_with(|| (key.clone(), member.clone(), 0));
            entry.2 += 1;
            entry.2 == 1
        };
        if !self
            .inner
            .refreshing
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.spawn_presence_refresh();
        }
        if first {
            let registry = self.clone();
            let (key2, token2) = (key.clone(), token.clone());
            tokio::spawn(async move {
                let _: Result<(), _> = registry
                    .run(
                        &key2,
                        Action::Join {
                            member,
                            token: token2,
                        },
                    )
                    .await;
            });
        }
        RemotePresence {
            registry: self.clone(),
            key: key.clone(),
            token,
        }
    }

    fn spawn_presence_refresh(&self) {
        let registry = self.clone();
        tokio::spawn(async move {
            let shutdown = registry.inner.shutdown.clone();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(REMOTE_PRESENCE_REFRESH) => {}
                }
                let present: Vec<(String, RoomKey, Member)> = registry
                    .inner
                    .remote_present
                    .lock()
                    .expect("registry lock")
                    .iter()
                    .map(|(t, (k, m, _))| (t.clone(), k.clone(), m.clone()))
                    .collect();
                for (token, key, member) in present {
                    let registry = registry.clone();
                    tokio::spawn(async move {
                        let _: Result<(), _> =
                            registry.run(&key, Action::Join { member, token }).await;
                    });
                }
            }
        });
    }

    pub async fn typing(&self, key: &RoomKey, member: Member) -> Result<(), RoomError> {
        self.run(key, Action::Typing { member }).await
    }

    /// Someone changed their name: the rooms they are in show it (best effort: a full mailbox
    /// skips it, and the next connection carries the new name anyway).
    pub fn renamed(&self, user_id: &str, name: &str) {
        for handle in self.actors().values() {
            let _ = handle.tx.try_send(Command::Renamed {
                user_id: user_id.to_string(),
                name: name.to_string(),
            });
        }
    }

    /// Held by a thread's actor for its whole awake period: a thread woken while its previous
    /// actor still closes (its agent, its log writer) waits for that, instead of racing it.
    pub(super) async fn awake_period(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .inner
            .awake
            .lock()
            .expect("registry lock")
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Takes the lease again, since the previous awake period may have released it on its way
    /// out: its epoch.
    pub(super) async fn reacquire_lease(&self, id: &str) -> Result<i64, RoomError> {
        let url = self.inner.deps.node_url.as_deref();
        let acquire = leases::acquire(self.pool(), id, &self.inner.owner, url);
        match tokio::time::timeout(leases::LEASE_TTL, acquire).await {
            Ok(Ok(Some(epoch))) => Ok(epoch),
            Ok(Ok(None)) => Err(RoomError::OwnedElsewhere),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(RoomError::DatabaseDown),
        }
    }

    fn retiring(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner.retiring.lock().expect("registry lock")
    }

    /// Closes a workspace's threads and keeps them closed until [`Registry::reopen`]: their
    /// agents and sandbox stop, their people's streams end. For deleting and moving a workspace.
    /// When another node owns it, its threads stop there; then this node holds the lease until
    /// `reopen`, so that no node wakes the workspace meanwhile.
    pub async fn retire(&self, workspace: &str) {
        self.stop_threads(workspace).await;
        let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
        let key = RoomKey {
            workspace: workspace.to_string(),
            thread: String::new(),
        };
        loop {
            let url = self.inner.deps.node_url.as_deref();
            match leases::acquire(self.pool(), workspace, &self.inner.owner, url).await {
                Ok(Some(_)) => return,
                Ok(None) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Err(e) = self.inner.forwarder.send(&key, &Action::Retire, left).await {
                        tracing::debug!(workspace, error = %e, "the owner did not stop the workspace yet");
                    }
                }
                Err(e) => {
                    tracing::warn!(workspace, error = %e, "cannot take the lease of a retiring workspace")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(workspace, "another node still owns the retiring workspace");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the workspace's threads on this node and keeps them from waking here.
    async fn stop_threads(&self, workspace: &str) {
        self.retiring().insert(workspace.to_string());
        let mut stopping = Vec::new();
        for handle in self.handles_of(workspace) {
            let (done, stopped) = oneshot::channel();
            if handle.tx.send(Command::Retire { done }).await.is_ok() {
                stopping.push(stopped);
            }
        }
        let all = futures::future::join_all(stopping);
        if tokio::time::timeout(SHUTDOWN_DEADLINE * 2, all)
            .await
            .is_err()
        {
            tracing::warn!(workspace = %workspace, "the workspace did not stop in time");
        }
        // The last thread's sandbox and lease go after its actor has answered.
        let gate = self.gate(workspace);
        let _closed = gate.lock().await;
    }

    /// The workspace may wake again (anywhere: the lease `retire` held goes).
    pub async fn reopen(&self, workspace: &str) {
        self.retiring().remove(workspace);
        self.release_lease(workspace, false).await;
    }

    /// A note in a thread (woken for it).
    pub async fn notice(
        &self,
        key: &RoomKey,
        level: crate::model::NoticeLevel,
        message: String,
    ) -> Result<(), RoomError> {
        self.run(key, Action::Notice { level, message }).await
    }

    /// Makes a thread's actor panic (tests of crash isolation).
    #[doc(hidden)]
    pub async fn crash_for_tests(&self, key: &RoomKey) -> Result<(), RoomError> {
        let handle = self.handle(key).await?;
        let _ = handle.tx.send(Command::Crash).await;
        Ok(())
    }

    /// Takes over, every [`leases::SWEEP`], the workspaces whose owner stopped renewing its lease
    /// (another node died, or lost Postgres): their threads with something in flight wake here
    /// (one node wins each lease), re-attach a running turn through the workspace's sandbox host
    /// and run the queue. Until shutdown.
    pub fn spawn_takeover(&self) {
        let registry = self.clone();
        tokio::spawn(async move {
            let shutdown = registry.inner.shutdown.clone();
            let waking = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(leases::SWEEP) => {}
                }
                let expired = match leases::expired(registry.pool(), 50).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot look for expired leases");
                        continue;
                    }
                };
                for workspace in expired {
                    if !waking
                        .lock()
                        .expect("takeover lock")
                        .insert(workspace.clone())
                    {
                        continue;
                    }
                    let registry = registry.clone();
                    let waking = waking.clone();
                    tokio::spawn(async move {
                        registry.take_over(&workspace).await;
                        waking.lock().expect("takeover lock").remove(&workspace);
                    });
                }
            }
        });
    }

    async fn take_over(&self, workspace: &str) {
        let threads = match store::threads::to_wake(self.pool(), workspace).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(workspace, error = %e, "cannot read the threads of a workspace to take over");
                return;
            }
        };
        for thread in threads {
            let key = RoomKey {
                workspace: workspace.to_string(),
                thread,
            };
            match self.info(&key).await {
                Ok(_) => {
                    tracing::info!(workspace, thread = %key.thread, "took over a workspace whose owner stopped renewing its lease")
                }
                // Another node was first.
                Err(RoomError::OwnedElsewhere) => return,
                Err(e) => tracing::warn!(workspace, error = %e, "cannot take over a workspace"),
            }
        }
    }

    /// Stops every actor (closing their sessions, flushing their logs) and waits for them, within
    /// a deadline.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some workspaces did not stop in time");
        }
    }
}
