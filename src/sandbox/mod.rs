//! A sandbox per workspace, as the reference design has it (`sandboxId` + `baseUrl` in the
//! workspace actor's state): where each workspace's agent runs, and how it is reached.
//!
//! Providers: `local` runs the workspace's own sandbox-agent on this machine inside a bubblewrap
//! sandbox ([`local`]); `none` does the same without the sandbox (`HUDDLE_SANDBOX=none`);
//! `remote` places it on a sandbox host the instance owner registered ([`hosts`]). A workspace
//! gets its sandbox when it is made ([`Sandboxes::place`]); the room starts it when it first
//! needs its agent and stops it when it sleeps ([`WorkspaceSandbox`]); deleting the workspace
//! destroys it. The actor reaches its agent only through its own sandbox's URL and token.

pub mod hosts;
pub mod limits;
pub mod local;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{SandboxHostInfo, SandboxProvider, SandboxSummary};
use crate::sandbox_agent::process::ProcessError;
use crate::sandbox_agent::{AcpError, AgentInfo, SandboxAgent, SessionPersistDriver};
use crate::store::{StoreError, WorkspaceRow};
use hosts::{Host, HostConfig, Hosts};
use local::LocalProvider;
use store::HostRow;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the sandbox host {0} is unreachable")]
    HostUnreachable(String),
    #[error("the sandbox host {0} is not registered")]
    UnknownHost(String),
    #[error("there is no healthy sandbox host to place the workspace on")]
    NoHost,
    #[error("sandbox I/O: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where agents may run.
pub struct SandboxConfig {
    /// This machine (bubblewrap, or not sandboxed); `None`: remote hosts only.
    pub local: Option<LocalProvider>,
    /// Hosts to register at start.
    pub hosts: Vec<HostConfig>,
}

/// What happened to a room's sandbox, for the room to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    HostDown(String),
    HostUp(String),
    /// A command hit the process limit: everything in the sandbox was stopped.
    ProcessLimit(u64),
    /// The kernel killed processes in the sandbox for memory (how many, the limit in bytes).
    OutOfMemory {
        killed: u64,
        limit: u64,
    },
    /// The sandbox's server stopped on its own.
    Died,
}

/// The sandboxes of all workspaces. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes(Arc<Inner>);

struct Inner {
    pool: PgPool,
    local: Option<LocalProvider>,
    hosts: Hosts,
    configured: Vec<HostConfig>,
    loaded: tokio::sync::OnceCell<()>,
    persist: Arc<dyn SessionPersistDriver>,
    agents: tokio::sync::Mutex<Option<(Instant, Vec<AgentInfo>)>>,
    http: reqwest::Client,
}

/// How long the list of agents is kept.
const AGENTS_KEPT: Duration = Duration::from_secs(60);

impl Sandboxes {
    /// Starts the hosts' health checks (until `stop`).
    pub fn new(
        pool: PgPool,
        config: SandboxConfig,
        persist: Arc<dyn SessionPersistDriver>,
        stop: CancellationToken,
    ) -> Self {
        let hosts = Hosts::default();
        // Hosts given at start are there at once; the database's are added on first use.
        for h in &config.hosts {
            if let Ok(row) = host_row(h) {
                hosts.add(row, h.agents.clone(), true);
            }
        }
        hosts.spawn_monitor(stop);
        Self(Arc::new(Inner {
            pool,
            local: config.local,
            hosts,
            configured: config.hosts,
            loaded: tokio::sync::OnceCell::new(),
            persist,
            agents: tokio::sync::Mutex::new(None),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a default HTTP client builds"),
        }))
    }

    /// What runs agents here, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.0.local {
            Some(l) => match &l.isolation {
                local::Isolation::Bubblewrap(_) => format!(
                    "a bubblewrap sandbox per workspace on this machine (limits: {})",
                    l.cgroups.describe()
                ),
                local::Isolation::None => {
                    "this machine, NOT sandboxed (HUDDLE_SANDBOX=none)".into()
                }
            },
            None => "remote sandbox hosts only".into(),
        }
    }

    /// The hosts in the database and the configured ones, once.
    async fn loaded(&self) -> Result<(), SandboxError> {
        self.0
            .loaded
            .get_or_try_init(|| async {
                for h in &self.0.configured {
                    store::upsert_host(&self.0.pool, &host_row(h)?).await?;
                }
                for row in store::hosts(&self.0.pool).await? {
                    if self.0.hosts.get(&row.id).is_none() {
                        self.0.hosts.add(row, None, true);
                    }
                }
                Ok::<(), SandboxError>(())
            })
            .await
            .map(|_| ())
    }

    pub fn host(&self, id: &str) -> Option<Arc<Host>> {
        self.0.hosts.get(id)
    }

    /// Asks the hosts that count as unreachable again, now (a prompt is about to be refused
    /// for one that may be back before its next scheduled check). Costs nothing while all answer.
    pub async fn recheck_unreachable(&self) {
        let down: Vec<Arc<Host>> = self
            .0
            .hosts
            .all()
            .into_iter()
            .filter(|h| !h.healthy())
            .collect();
        for host in down {
            if hosts::check(&self.0.http, &host.endpoint).await {
                host.mark_healthy();
            }
        }
    }

    /// Picks where a new workspace's sandbox goes: the least-loaded of this machine (when it
    /// runs agents) and the healthy hosts.
    /// With `here_only` (a directory on this machine was picked), this machine only.
    pub async fn place(&self, here_only: bool) -> Result<Placement, SandboxError> {
        self.loaded().await?;
        let load = store::load(&self.0.pool).await?;
        let count = |host: Option<&str>| {
            load.iter()
                .find(|(h, _)| h.as_deref() == host)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        };
        let mut best: Option<(i64, Placement)> = None;
        if let Some(l) = &self.0.local {
            let provider = match l.isolation {
                local::Isolation::Bubblewrap(_) => SandboxProvider::Local,
                local::Isolation::None => SandboxProvider::None,
            };
            best = Some((
                count(None),
                Placement {
                    provider,
                    host: None,
                    sandbox_id: new_sandbox_id(),
                },
            ));
        }
        if here_only {
            return best.map(|(_, p)| p).ok_or_else(|| {
                SandboxError::Invalid(
                    "A picked directory needs agents on this machine, and this Huddle runs them on sandbox hosts only."
                        .into(),
                )
            });
        }
        for host in self.0.hosts.all().into_iter().filter(|h| h.healthy()) {
            let n = count(Some(&host.row.id));
            if best.as_ref().is_none_or(|(b, _)| n < *b) {
                best = Some((
                    n,
                    Placement {
                        provider: SandboxProvider::Remote,
                        host: Some(host.row.clone()),
                        sandbox_id: new_sandbox_id(),
                    },
                ));
            }
        }
        best.map(|(_, p)| p).ok_or(SandboxError::NoHost)
    }

    /// Registers a host (it must answer its health check with this token).
    pub async fn add_host(
        &self,
        url: &str,
        token: Option<String>,
        cwd_root: Option<String>,
    ) -> Result<SandboxHostInfo, SandboxError> {
        self.loaded().await?;
        let config = HostConfig {
            url: url.trim().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            cwd_root: cwd_root.filter(|c| !c.trim().is_empty()),
            agents: None,
        };
        let row = host_row(&config)?;
        let endpoint = crate::sandbox_agent::Endpoint {
            base_url: row.url.clone(),
            token: row.token.clone(),
            agents: None,
        };
        if !hosts::check(&self.0.http, &endpoint).await {
            return Err(SandboxError::Invalid(format!(
                "The sandbox host {} did not answer its health check with this token.",
                row.id
            )));
        }
        store::upsert_host(&self.0.pool, &row).await?;
        self.0.hosts.add(row.clone(), None, true);
        Ok(self
            .list_hosts()
            .await?
            .into_iter()
            .find(|h| h.id == row.id)
            .unwrap_or(SandboxHostInfo {
                id: row.id,
                url: row.url,
                cwd_root: row.cwd_root,
                healthy: true,
                workspaces: 0,
            }))
    }

    pub async fn list_hosts(&self) -> Result<Vec<SandboxHostInfo>, SandboxError> {
        self.loaded().await?;
        let load = store::load(&self.0.pool).await?;
        Ok(self
            .0
            .hosts
            .all()
            .into_iter()
            .map(|h| SandboxHostInfo {
                id: h.row.id.clone(),
                url: h.row.url.clone(),
                cwd_root: h.row.cwd_root.clone(),
                healthy: h.healthy(),
                workspaces: load
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(h.row.id.as_str()))
                    .map(|(_, n)| *n)
                    .unwrap_or(0),
            })
            .collect())
    }

    /// The host a workspace may be moved to.
    pub async fn host_for_move(&self, id: &str) -> Result<HostRow, SandboxError> {
        self.loaded().await?;
        let host = self
            .0
            .hosts
            .get(id)
            .ok_or_else(|| SandboxError::UnknownHost(crate::error::quoted(id)))?;
        if !host.healthy() {
            return Err(SandboxError::HostUnreachable(host.row.id.clone()));
        }
        Ok(host.row.clone())
    }

    /// The agents a sandbox offers (asked of a short-lived sandbox, or a host; kept a minute).
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>, SandboxError> {
        let mut kept = self.0.agents.lock().await;
        if let Some((at, list)) = &*kept
            && at.elapsed() < AGENTS_KEPT
        {
            return Ok(list.clone());
        }
        self.loaded().await?;
        let list = match &self.0.local {
            Some(local) => {
                let cwd = local.dir.join("probe").join("work");
                let running = local.start("probe", &cwd).await?;
                let client =
                    SandboxAgent::new(running.process.endpoint().clone(), self.0.persist.clone());
                let list = client.list_agents().await;
                running.stop().await;
                list.map_err(|e| SandboxError::Invalid(e.to_string()))?
            }
            None => {
                let host = self
                    .0
                    .hosts
                    .all()
                    .into_iter()
                    .find(|h| h.healthy())
                    .ok_or(SandboxError::NoHost)?;
                SandboxAgent::new(host.endpoint.clone(), self.0.persist.clone())
                    .list_agents()
                    .await
                    .map_err(|_| SandboxError::HostUnreachable(host.row.id.clone()))?
            }
        };
        *kept = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Where a workspace's agent works: on this machine its directory; on a host, a directory
    /// of its own under the host's root.
    pub fn working_dir(&self, row: &WorkspaceRow, on_this_machine: PathBuf) -> PathBuf {
        match row
            .sandbox_host
            .as_deref()
            .and_then(|h| self.0.hosts.get(h))
        {
            Some(host) => PathBuf::from(&host.row.cwd_root).join(&row.id),
            None => on_this_machine,
        }
    }

    /// The sandbox of an awake room; its events go to `events`. The registry wakes a room only
    /// once the one before it has stopped (and with it the sandbox).
    pub fn open(
        &self,
        row: &WorkspaceRow,
        cwd: PathBuf,
        events: mpsc::UnboundedSender<SandboxEvent>,
        stop: CancellationToken,
        held: &crate::store::leases::Held,
    ) -> Arc<WorkspaceSandbox> {
        let persist = self.0.persist.fenced(crate::sandbox_agent::Fence {
            workspace_id: row.id.clone(),
            held: held.clone(),
        });
        let sandbox = Arc::new(WorkspaceSandbox {
            sandboxes: self.clone(),
            persist,
            summary: row.sandbox(),
            cwd,
            slot: tokio::sync::Mutex::new(None),
            events,
            stop,
            closed: Default::default(),
        });
        sandbox.watch_host();
        sandbox
    }

    /// Destroys a workspace's sandbox: on this machine its home and groups, on a host its
    /// working directory.
    pub async fn destroy(&self, row: &WorkspaceRow, cwd: &std::path::Path) {
        let summary = row.sandbox();
        match summary.provider {
            SandboxProvider::Local | SandboxProvider::None => {
                if let Some(local) = &self.0.local {
                    local.destroy(&summary.id).await;
                }
            }
            SandboxProvider::Remote => {
                if let Some(host) = self.0.hosts.get(&summary.host) {
                    let url = format!("{}/v1/fs/entry", host.row.url);
                    let mut req = self.0.http.delete(url).query(&[
                        ("path", cwd.display().to_string().as_str()),
                        ("recursive", "true"),
                    ]);
                    if let Some(t) = &host.row.token {
                        req = req.bearer_auth(t);
                    }
                    if let Err(e) = req.send().await.and_then(|r| r.error_for_status()) {
                        tracing::warn!(host = %host.row.id, error = %e, "could not remove a deleted workspace's directory on its host");
                    }
                }
            }
        }
    }

    /// Sandboxes a killed Huddle left running on this machine: the workspaces whose rooms should
    /// wake to adopt them (or stop them); those of deleted workspaces are destroyed.
    pub async fn leftovers(&self) -> Vec<String> {
        let Some(local) = &self.0.local else {
            return Vec::new();
        };
        let mut rooms = Vec::new();
        for id in local.leftovers() {
            if id == "probe" {
                local.stop_leftover(&id).await;
                continue;
            }
            match store::workspace_of(&self.0.pool, &id).await {
                Ok(Some(ws)) => rooms.push(ws),
                Ok(None) => local.destroy(&id).await,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "cannot tell whose sandbox was left running")
                }
            }
        }
        rooms
    }

    /// Connections a killed Huddle left on the sandbox hosts, with their agents running: the
    /// threads whose session they are (to wake, re-attach a running turn, or close them), as
    /// `(workspace, thread)`. A connection no session holds any more is closed here.
    pub async fn host_leftovers(&self) -> Vec<(String, String)> {
        if let Err(e) = self.loaded().await {
            tracing::warn!(error = %e, "cannot read the sandbox hosts");
            return Vec::new();
        }
        let mut rooms = Vec::new();
        for host in self.0.hosts.all().into_iter().filter(|h| h.healthy()) {
            let client = SandboxAgent::new(host.endpoint.clone(), self.0.persist.clone());
            let ids: Vec<String> = match client.list_connections().await {
                Ok(ids) => ids
                    .into_iter()
                    .filter(|i| i.starts_with("huddle-"))
                    .collect(),
                Err(e) => {
                    tracing::warn!(host = %host.row.id, error = %e, "cannot list the connections on a sandbox host");
                    continue;
                }
            };
            if ids.is_empty() {
                continue;
            }
            let held = match store::threads_of_connections(&self.0.pool, &ids).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(host = %host.row.id, error = %e, "cannot tell whose connections a sandbox host holds");
                    continue;
                }
            };
            for id in &ids {
                match held.iter().find(|(c, _, _)| c == id) {
                    Some((_, ws, thread)) => rooms.push((ws.clone(), thread.clone())),
                    None => {
                        tracing::info!(host = %host.row.id, connection = %id, "closing a connection no session holds");
                        if let Err(e) = client.close_connection(id).await {
                            tracing::warn!(connection = %id, error = %e, "could not close a connection left on a sandbox host");
                        }
                    }
                }
            }
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }
}

/// Where a new workspace goes.
pub struct Placement {
    pub provider: SandboxProvider,
    pub host: Option<HostRow>,
    pub sandbox_id: String,
}

fn new_sandbox_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(12)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("sbx_{suffix}")
}

fn host_row(h: &HostConfig) -> Result<HostRow, SandboxError> {
    Ok(HostRow {
        id: hosts::host_id(&h.url)?,
        url: h.url.trim_end_matches('/').to_string(),
        token: h.token.clone(),
        cwd_root: h
            .cwd_root
            .clone()
            .unwrap_or_else(|| hosts::DEFAULT_CWD_ROOT.into()),
    })
}

/// The sandbox of one awake room: started on first need, stopped when the room sleeps.
pub struct WorkspaceSandbox {
    sandboxes: Sandboxes,
    /// The session store, its writes fenced by the workspace's lease.
    persist: Arc<dyn SessionPersistDriver>,
    summary: SandboxSummary,
    cwd: PathBuf,
    slot: tokio::sync::Mutex<Option<Live>>,
    events: mpsc::UnboundedSender<SandboxEvent>,
    /// Ends the host watcher with the room.
    stop: CancellationToken,
    /// Stopped for good (the room fell asleep): a late task of the room starts nothing.
    closed: std::sync::atomic::AtomicBool,
}

struct Live {
    client: SandboxAgent,
    local: Option<local::Running>,
    watchdog: CancellationToken,
}

impl WorkspaceSandbox {
    pub fn summary(&self) -> &SandboxSummary {
        &self.summary
    }

    /// Where the agent works.
    pub fn working_dir(&self) -> &std::path::Path {
        &self.cwd
    }

    fn host(&self) -> Option<Arc<Host>> {
        (self.summary.provider == SandboxProvider::Remote)
            .then(|| self.sandboxes.host(&self.summary.host))
            .flatten()
    }

    /// The host this room's sandbox is on, when it is unreachable now.
    pub fn unreachable_host(&self) -> Option<String> {
        match self.summary.provider {
            SandboxProvider::Remote => match self.host() {
                Some(h) if h.healthy() => None,
                _ => Some(self.summary.host.clone()),
            },
            _ => None,
        }
    }

    /// Tells the room when its host goes away and comes back.
    fn watch_host(&self) {
        let Some(host) = self.host() else {
            return;
        };
        let mut health = host.watch();
        let events = self.events.clone();
        let stop = self.stop.clone();
        let id = host.row.id.clone();
        tokio::spawn(async move {
            let mut was = *health.borrow_and_update();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = health.changed() => if changed.is_err() { return },
                }
                let now = *health.borrow_and_update();
                if now != was {
                    was = now;
                    let event = if now {
                        SandboxEvent::HostUp(id.clone())
                    } else {
                        SandboxEvent::HostDown(id.clone())
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// A client of this sandbox's server, which is started (or adopted) first when it is not
    /// running.
    pub async fn client(&self) -> Result<SandboxAgent, AcpError> {
        let mut slot = self.slot.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AcpError::Invalid("the room is asleep".into()));
        }
        if let Some(live) = &*slot
            && live.local.as_ref().is_none_or(|r| r.process.running())
        {
            return Ok(live.client.clone());
        }
        if let Some(old) = slot.take() {
            old.watchdog.cancel();
            if let Some(running) = old.local {
                running.stop().await;
            }
        }
        let live = self.start().await.map_err(|e| {
            tracing::error!(sandbox = %self.summary.id, error = %e, "cannot start the sandbox");
            match e {
                SandboxError::HostUnreachable(h) => {
                    AcpError::Unreachable(format!("the sandbox host {h} is unreachable"))
                }
                other => AcpError::Invalid(format!("the sandbox could not be started: {other}")),
            }
        })?;
        let client = live.client.clone();
        *slot = Some(live);
        self.record("running");
        Ok(client)
    }

    async fn start(&self) -> Result<Live, SandboxError> {
        let persist = self.persist.clone();
        let watchdog = self.stop.child_token();
        match self.summary.provider {
            SandboxProvider::Local | SandboxProvider::None => {
                let local = self.sandboxes.0.local.as_ref().ok_or_else(|| {
                    SandboxError::Unsupported(
                        "this Huddle runs agents on sandbox hosts only; move the workspace to one"
                            .into(),
                    )
                })?;
                let running = local.start(&self.summary.id, &self.cwd).await?;
                let client = SandboxAgent::new(running.process.endpoint().clone(), persist);
                if let Some(group) = running.cgroup.clone() {
                    spawn_watchdog(
                        group,
                        running.process.pgid(),
                        local.limits,
                        self.events.clone(),
                        watchdog.clone(),
                    );
                }
                Ok(Live {
                    client,
                    local: Some(running),
                    watchdog,
                })
            }
            SandboxProvider::Remote => {
                let host = self
                    .host()
                    .ok_or_else(|| SandboxError::UnknownHost(self.summary.host.clone()))?;
                if !host.healthy() {
                    return Err(SandboxError::HostUnreachable(host.row.id.clone()));
                }
                // `session/new` needs an existing directory.
                let url = format!("{}/v1/fs/mkdir", host.row.url);
                let mut req = self
                    .sandboxes
                    .0
                    .http
                    .post(url)
                    .query(&[("path", self.cwd.display().to_string())]);
                if let Some(t) = &host.row.token {
                    req = req.bearer_auth(t);
                }
                req.send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|_| SandboxError::HostUnreachable(host.row.id.clone()))?;
                Ok(Live {
                    client: SandboxAgent::new(host.endpoint.clone(), persist),
                    local: None,
                    watchdog,
                })
            }
        }
    }

    /// Closes, in the background, a connection a previous run left on this workspace's sandbox
    /// host (a local sandbox left running is stopped with everything in it instead).
    pub fn close_left_connection(&self, server_id: String) {
        let Some(host) = self.host() else {
            return;
        };
        let client = SandboxAgent::new(host.endpoint.clone(), self.persist.clone());
        tokio::spawn(async move {
            match client.close_connection(&server_id).await {
                Ok(()) => {
                    tracing::debug!(connection = %server_id, "closed a connection left on the sandbox host")
                }
                Err(e) => {
                    tracing::warn!(connection = %server_id, error = %e, "could not close a connection left on the sandbox host")
                }
            }
        });
    }

    /// Stops the sandbox (the room sleeps): a local one with everything in it, also one a killed
    /// Huddle left running that this room never adopted.
    pub async fn stop(&self) {
        let mut slot = self.slot.lock().await;
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let live = slot.take();
        drop(slot);
        match live {
            Some(live) => {
                live.watchdog.cancel();
                if let Some(running) = live.local {
                    running.stop().await;
                }
            }
            None => {
                if let (Some(local), SandboxProvider::Local | SandboxProvider::None) =
                    (&self.sandboxes.0.local, self.summary.provider)
                {
                    local.stop_leftover(&self.summary.id).await;
                }
            }
        }
        self.record("stopped");
    }

    /// Records the sandbox's state (in the background: nothing waits on it).
    pub fn record(&self, state: &'static str) {
        let pool = self.sandboxes.0.pool.clone();
        let id = self.summary.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store::set_state(&pool, &id, state).await {
                tracing::debug!(sandbox = %id, error = %e, "could not record the sandbox's state");
            }
        });
    }
}

/// Watches a local sandbox each second: what the kernel refused or killed in it, and whether its
/// server still runs. A command that hits the process limit (a fork bomb) gets the whole sandbox
/// stopped: its processes would hold the limit for ever.
fn spawn_watchdog(
    group: limits::Cgroup,
    leader: Option<i32>,
    limits: limits::SandboxLimits,
    events: mpsc::UnboundedSender<SandboxEvent>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut seen = group.pressure();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = group.pressure();
            if now.oom_kills > seen.oom_kills {
                let _ = events.send(SandboxEvent::OutOfMemory {
                    killed: now.oom_kills - seen.oom_kills,
                    limit: limits.memory,
                });
            }
            if now.pids_refused > seen.pids_refused {
                tracing::warn!(
                    pids = limits.pids,
                    "a sandbox hit its process limit; stopping everything in it"
                );
                group.kill_all().await;
                let _ = events.send(SandboxEvent::ProcessLimit(limits.pids));
                return;
            }
            seen = now;
            let running = leader.is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                    && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                        s.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    })
            });
            if !running && !stop.is_cancelled() {
                let _ = events.send(SandboxEvent::Died);
                return;
            }
        }
    });
}
