//! What request handlers and server functions share: the pool, the rooms, where agents run, and
//! the services the server functions call (each of them one call into this). Also how server-side
//! errors become API errors.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use leptos::prelude::*;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Caller, Need};
use crate::cluster::counts::{Counted, Counting, NodeCounts};
use crate::error::{ApiError, ErrorCode};
use crate::limits::Limits;
use crate::model::{
    CreatedWorkspace, DEFAULT_AGENT, WorkspaceSummary, is_valid_agent_id, workspace_url,
};
use crate::room::{Registry, RoomError, RoomKey};
use crate::sandbox::SandboxError;
use crate::store::{self, StoreError};

/// Everything request handlers and server functions share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    pool: PgPool,
    leptos_options: LeptosOptions,
    registry: Registry,
    shutdown: CancellationToken,
    /// The host names (with port) requests may be addressed to.
    allowed_hosts: Vec<String>,
    limits: Limits,
    /// The load balancers whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Live streams per address and person, across every node.
    counts: NodeCounts,
    auth: Auth,
    /// Where owners may pick an existing directory for a workspace (`None`: nowhere).
    projects_root: Option<std::path::PathBuf>,
    secure_cookies: bool,
    folds: Folds,
    /// Which workspace each thread is in, and each workspace's first thread (neither changes).
    thread_workspace: quick_cache::sync::Cache<String, String>,
    first_thread: quick_cache::sync::Cache<String, String>,
    needs_you: crate::needs_you::NeedsYou,
    catch_up: crate::room_sse::CatchUp,
}

/// How many rooms' folded timelines are kept.
const FOLDS_KEPT: usize = 32;

/// The folded timelines of recently viewed rooms, each with the seq it is folded up to: a page
/// or a history page applies only the entries logged since, instead of reading and folding the
/// whole log (20,000 entries after a day with a real agent).
type Folds =
    quick_cache::sync::Cache<String, Arc<tokio::sync::Mutex<(i64, crate::timeline::Fold)>>>;

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.clone()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.0.leptos_options.clone()
    }
}

/// The state, from the context every server function runs in.
pub fn state() -> Result<AppState, ApiError> {
    use_context::<AppState>().ok_or_else(|| {
        tracing::error!("server function called without AppState in context");
        ApiError::internal()
    })
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "database error");
        ApiError::new(
            ErrorCode::Unavailable,
            "The database is unavailable; try again shortly.",
        )
    }
}

impl From<RoomError> for ApiError {
    fn from(err: RoomError) -> Self {
        match err {
            RoomError::UnknownWorkspace(_) | RoomError::NotFound(_) => {
                ApiError::not_found(err.to_string())
            }
            RoomError::Invalid(m) => ApiError::bad_request(m),
            RoomError::Forbidden(m) => ApiError::forbidden(m),
            RoomError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            RoomError::Store(e) => e.into(),
            RoomError::DatabaseDown => ApiError::new(
                ErrorCode::Unavailable,
                "The database is unavailable; nothing was lost, try again shortly.",
            ),
            RoomError::Agent(e) => {
                tracing::error!(error = %e, "agent error");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "The agent is unavailable; try again shortly.",
                )
            }
            RoomError::Stopped | RoomError::Asleep => ApiError::new(
                ErrorCode::Unavailable,
                "The workspace restarted; try again.",
            ),
            RoomError::Timeout => ApiError::new(
                ErrorCode::Timeout,
                "The workspace did not answer in time; try again.",
            ),
            RoomError::QueueFull(n) => ApiError::new(
                ErrorCode::QueueFull,
                format!(
                    "The queue is full: {n} prompts already wait. Try again when some have run."
                ),
            ),
            RoomError::OwnedElsewhere => ApiError::new(
                ErrorCode::OwnedElsewhere,
                "This workspace is open on another Huddle server right now; try again shortly.",
            ),
            RoomError::HostUnreachable(host) => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "The sandbox host {host} is unreachable; nothing was sent. Try again when it is back."
                ),
            ),
            RoomError::Remote(e) => e,
            RoomError::Deleting => ApiError::new(
                ErrorCode::Conflict,
                "This workspace is being deleted or moved right now.",
            ),
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(err: SandboxError) -> Self {
        match err {
            SandboxError::Invalid(m) | SandboxError::Unsupported(m) => ApiError::bad_request(m),
            SandboxError::UnknownHost(_) => ApiError::bad_request(err.to_string()),
            SandboxError::HostUnreachable(h) => ApiError::new(
                ErrorCode::Unavailable,
                format!("The sandbox host {h} is unreachable; try again when it is back."),
            ),
            SandboxError::NoHost => ApiError::new(
                ErrorCode::Unavailable,
                "No sandbox host answers now, so the workspace cannot be placed; try again shortly.",
            ),
            SandboxError::Store(e) => e.into(),
            SandboxError::Io(_) | SandboxError::Process(_) => {
                tracing::error!(error = %err, "sandbox error");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "The sandbox could not be made; try again shortly.",
                )
            }
        }
    }
}

/// Every error leaves as JSON `{code, message}` with the status its code stands for.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(self.code), axum::Json(self)).into_response()
    }
}

/// What an [`AppState`] is made of.
pub struct Parts {
    pub pool: PgPool,
    pub leptos_options: LeptosOptions,
    pub registry: Registry,
    pub shutdown: CancellationToken,
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub counts: NodeCounts,
    pub auth: Auth,
    pub projects_root: Option<std::path::PathBuf>,
    pub needs_you: crate::needs_you::NeedsYou,
}

/// A message someone sends to a thread: a prompt, or with `team_only` a note for the team.
#[derive(Debug, Default)]
pub struct NewMessage {
    pub text: String,
    pub team_only: bool,
    pub images: Vec<crate::model::ImageUpload>,
    /// Person ids (or `here`) the composer says the message mentions.
    pub mentions: Vec<String>,
}

impl AppState {
    pub fn new(p: Parts) -> Self {
        let secure_cookies = p.auth.base_url().starts_with("https://");
        Self(Arc::new(Inner {
            catch_up: crate::room_sse::CatchUp::new(p.pool.clone()),
            pool: p.pool,
            leptos_options: p.leptos_options,
            registry: p.registry,
            shutdown: p.shutdown,
            allowed_hosts: p.allowed_hosts,
            limits: p.limits,
            trusted_proxies: p.trusted_proxies,
            counts: p.counts,
            auth: p.auth,
            projects_root: p.projects_root,
            needs_you: p.needs_you,
            secure_cookies,
            folds: Folds::new(FOLDS_KEPT),
            thread_workspace: quick_cache::sync::Cache::new(10_000),
            first_thread: quick_cache::sync::Cache::new(10_000),
        }))
    }

    pub fn leptos_options(&self) -> &LeptosOptions {
        &self.0.leptos_options
    }

    /// The host names (with port) requests may be addressed to.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.0.allowed_hosts
    }

    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// The room log as streams read it to catch up.
    pub fn catch_up(&self) -> &crate::room_sse::CatchUp {
        &self.0.catch_up
    }

    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// This node among the others.
    pub fn nodes(&self) -> &NodeCounts {
        &self.0.counts
    }

    /// Cookies get `Secure` when people reach Huddle over https.
    pub fn secure_cookies(&self) -> bool {
        self.0.secure_cookies
    }

    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    pub fn needs_you(&self) -> &crate::needs_you::NeedsYou {
        &self.0.needs_you
    }

    /// Cancelled when the server shuts down: long-lived streams end on it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Everything the page of a workspace renders: its state, its whole room log, and its
    /// finished agent messages as sanitised HTML. Viewers do not see the working directory.
    pub async fn room_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
    ) -> Result<crate::model::RoomSnapshot, ApiError> {
        let (_, info, hidden_dir) = self.viewed_info(caller, id, thread).await?;
        let mut entries =
            store::room_log::list(self.pool(), &info.thread_id, 0, info.head, i64::MAX).await?;
        if let Some(dir) = &hidden_dir {
            for e in &mut entries {
                if let Some(hidden) = e.without_paths(dir) {
                    *e = hidden;
                }
            }
        }
        let rendered = render_finished(&crate::timeline::build(&entries).items);
        Ok(crate::model::RoomSnapshot {
            info,
            entries,
            rendered,
        })
    }

    /// The page of a workspace: who is looking, what they may do, and the room.
    pub async fn room_page(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        latest: bool,
    ) -> Result<crate::timeline::RoomPage, ApiError> {
        let recent = match (thread, latest) {
            (None, true) => {
                self.auth().require(caller, id, Need::View).await?;
                store::threads::most_recent(self.pool(), id).await?
            }
            _ => None,
        };
        let thread = thread.or(recent.as_deref());
        let (grant, info, hidden_dir) = self.viewed_info(caller, id, thread).await?;
        let mut me = self.auth().me(caller)?;
        me.display_name = grant.member.display_name.clone();
        // The most recent rows only; older ones page in as people scroll up.
        let (head, (fold, older)) = self
            .with_fold(&info.thread_id, info.head, |fold| {
                fold.clone().tail(2, 200, PAGE_TEXT_BYTES)
            })
            .await?;
        let fold = match hidden_dir {
            Some(_) => fold.without_paths(),
            None => fold,
        };
        let rendered = render_finished(fold.items());
        let fold = fold.without_finished_text();
        let threads = self.threads(caller, id).await?;
        Ok(crate::timeline::RoomPage {
            me,
            access: crate::model::Access {
                role: grant.role,
                may_approve: grant.may_approve,
            },
            info,
            fold,
            head,
            rendered,
            older,
            threads,
        })
    }

    /// Runs `f` on the room's timeline folded up to `head` (or further, when more was logged
    /// meanwhile), and says the seq it is folded up to: from the cache, with what was logged since
    /// applied.
    async fn with_fold<R>(
        &self,
        thread_id: &str,
        head: i64,
        f: impl FnOnce(&crate::timeline::Fold) -> R,
    ) -> Result<(i64, R), ApiError> {
        let slot = self
            .0
            .folds
            .get_or_insert_with(thread_id, || {
                Ok::<_, std::convert::Infallible>(Arc::new(tokio::sync::Mutex::new((
                    0,
                    crate::timeline::Fold::default(),
                ))))
            })
            .unwrap_or_else(|never| match never {});
        let mut cached = slot.lock().await;
        if cached.0 < head {
            let since =
                store::room_log::list(self.pool(), thread_id, cached.0, head, i64::MAX).await?;
            for e in &since {
                cached.1.apply(e);
            }
            cached.0 = since.last().map_or(cached.0, |e| e.seq);
        }
        Ok((cached.0, f(&cached.1)))
    }

    /// A page of older rows: those before row `before`, newest last.
    pub async fn history(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        before: usize,
    ) -> Result<crate::timeline::HistoryPage, ApiError> {
        let grant = self.auth().require(caller, id, Need::View).await?;
        let key = self.room_key(id, thread).await?;
        let head = store::room_log::head(self.pool(), &key.thread).await?;
        let (_, ((start, mut items), cwd)) = self
            .with_fold(&key.thread, head, |fold| {
                (
                    fold.page(before, 100, PAGE_TEXT_BYTES),
                    fold.cwd().map(str::to_string),
                )
            })
            .await?;
        if grant.role == crate::model::Role::Viewer
            && let Some(dir) = cwd
        {
            crate::timeline::hide_paths(&mut items, &dir);
        }
        let rendered = render_finished(&items);
        crate::timeline::clear_finished_text(&mut items);
        Ok(crate::timeline::HistoryPage {
            start,
            items,
            rendered,
        })
    }

    /// The home page: who is looking, their workspaces, and the agents to pick from.
    pub async fn home(&self, caller: &Caller) -> Result<crate::model::HomeView, ApiError> {
        let me = match caller {
            Caller::Nobody => crate::model::Me::guest(),
            _ => self.auth().me(caller)?,
        };
        let workspaces = crate::auth::store::my_workspaces(self.pool(), &me.person_id)
            .await?
            .into_iter()
            .filter_map(|w| {
                Some(crate::model::MyWorkspace {
                    workspace_id: w.id,
                    name: w.name,
                    agent: w.agent,
                    role: crate::model::Role::parse(&w.role)?,
                    created_at: w.created_at_ms,
                    status: "asleep".into(),
                    last_activity: w.last_activity_ms,
                })
            })
            .collect::<Vec<_>>();
        let mut workspaces = workspaces;
        for w in &mut workspaces {
            if let Some(status) = self.registry().status_if_awake(&w.workspace_id).await {
                w.status = status;
            }
        }
        let agents = if me.may_create {
            self.agents().await
        } else {
            Vec::new()
        };
        Ok(crate::model::HomeView {
            me,
            workspaces,
            agents,
            projects_root: self.0.projects_root.is_some(),
        })
    }

    pub async fn info(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
    ) -> Result<crate::model::WorkspaceInfo, ApiError> {
        Ok(self.viewed_info(caller, id, thread).await?.1)
    }

    /// The thread a room action is for: `thread` when it is one of the workspace's, else (absent)
    /// the workspace's first thread.
    pub async fn room_key(
        &self,
        workspace: &str,
        thread: Option<&str>,
    ) -> Result<RoomKey, ApiError> {
        let no_thread = || ApiError::not_found("There is no such thread in this workspace.");
        let thread = match thread {
            Some(t) => {
                if !crate::model::is_valid_thread_id(t) {
                    return Err(no_thread());
                }
                let owner = match self.0.thread_workspace.get(t) {
                    Some(ws) => ws,
                    None => {
                        let row = store::threads::find(self.pool(), t)
                            .await?
                            .ok_or_else(no_thread)?;
                        self.0
                            .thread_workspace
                            .insert(t.to_string(), row.workspace_id.clone());
                        row.workspace_id
                    }
                };
                if owner != workspace {
                    return Err(no_thread());
                }
                t.to_string()
            }
            None => match self.0.first_thread.get(workspace) {
                Some(t) => t,
                None => {
                    let row = store::threads::first(self.pool(), workspace)
                        .await?
                        .ok_or_else(|| ApiError::not_found("There is no such workspace."))?;
                    self.0
                        .first_thread
                        .insert(workspace.to_string(), row.id.clone());
                    row.id
                }
            },
        };
        Ok(RoomKey {
            workspace: workspace.to_string(),
            thread,
        })
    }

    /// The workspace's state as the caller may see it, and their grant; for viewers, who get no
    /// paths, the working directory hidden from them.
    async fn viewed_info(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
    ) -> Result<
        (
            crate::auth::Grant,
            crate::model::WorkspaceInfo,
            Option<String>,
        ),
        ApiError,
    > {
        let grant = self.auth().require(caller, id, Need::View).await?;
        let key = self.room_key(id, thread).await?;
        let mut info = self.registry().info(&key).await?;
        let hidden = (grant.role == crate::model::Role::Viewer)
            .then(|| std::mem::take(&mut info.working_dir));
        Ok((grant, info, hidden))
    }

    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        clear_queue: bool,
    ) -> Result<(), ApiError> {
        let grant = self.auth().require(caller, id, Need::Act).await?;
        let key = self.room_key(id, thread).await?;
        Ok(self
            .registry()
            .cancel(&key, grant.member, clear_queue)
            .await?)
    }

    pub async fn answer_permission(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        request_id: String,
        option_id: String,
    ) -> Result<(), ApiError> {
        let grant = self.auth().require(caller, id, Need::Approve).await?;
        let key = self.room_key(id, thread).await?;
        Ok(self
            .registry()
            .answer_permission(&key, grant.member, request_id, option_id)
            .await?)
    }

    pub async fn typing(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
    ) -> Result<(), ApiError> {
        let grant = self.auth().require(caller, id, Need::Act).await?;
        let key = self.room_key(id, thread).await?;
        Ok(self.registry().typing(&key, grant.member).await?)
    }

    /// Changes the caller's display name; the rooms they are in show the new one at once.
    pub async fn rename(&self, caller: &Caller, name: &str) -> Result<crate::model::Me, ApiError> {
        let me = self.auth().rename(caller, name).await?;
        self.registry().renamed(&me.person_id, &me.display_name);
        Ok(me)
    }

    /// Changes an option of the agent's session (mode, model) for the room.
    pub async fn set_option(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        config_id: String,
        value: String,
    ) -> Result<(), ApiError> {
        let grant = self.auth().require(caller, id, Need::Act).await?;
        let key = self.room_key(id, thread).await?;
        let valid = |s: &str| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control);
        if !valid(&config_id) || !valid(&value) {
            return Err(ApiError::bad_request(
                "configId and value must be 1 to 128 characters with no control characters.",
            ));
        }
        Ok(self
            .registry()
            .set_option(&key, grant.member, config_id, value)
            .await?)
    }

    /// Takes a waiting prompt off the queue: the owner may remove any, others their own.
    pub async fn remove_queued(
        &self,
        caller: &Caller,
        id: &str,
        thread: Option<&str>,
        seq: i64,
    ) -> Result<(), ApiError> {
        let grant = self.auth().require(caller, id, Need::Act).await?;
        let key = self.room_key(id, thread).await?;
        let any = grant.role == crate::model::Role::Owner;
        Ok(self
            .registry()
            .remove_queued(&key, grant.member, seq, any)
            .await?)
    }

    /// The agents sandbox-agent offers; the mock is always there (the embedded server installs
    /// it, and it needs no credentials).
    pub async fn agents(&self) -> Vec<crate::model::AgentChoice> {
        let mut agents: Vec<crate::model::AgentChoice> =
            match self.registry().sandboxes().list_agents().await {
                Ok(list) => list
                    .into_iter()
                    .map(|a| crate::model::AgentChoice {
                        id: a.id,
                        installed: a.installed,
                        credentials_available: a.credentials_available,
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list agents");
                    Vec::new()
                }
            };
        if !agents.iter().any(|a| a.id == DEFAULT_AGENT) {
            agents.push(crate::model::AgentChoice {
                id: DEFAULT_AGENT.into(),
                installed: true,
                credentials_available: true,
            });
        }
        agents
    }

    /// A person's prompt, within their prompts per minute.
    pub async fn prompt(
        &self,
        caller: &Caller,
        workspace_id: &str,
        thread: Option<&str>,
        message: NewMessage,
    ) -> Result<i64, ApiError> {
        let NewMessage {
            text,
            team_only,
            images,
            mentions,
        } = message;
        let text = crate::model::check_prompt(text)?;
        let images = check_images(images)?;
        let grant = self.auth().require(caller, workspace_id, Need::Act).await?;
        let key = self.room_key(workspace_id, thread).await?;
        let mentions = self
            .resolve_mentions(&key, &grant.member.user_id, mentions)
            .await?;
        // Shared by every node: the same person's prompts count together wherever they land.
        let rate = self.0.limits.prompts_per_minute;
        if let Err(wait) = store::rates::take(self.pool(), &grant.member.user_id, rate).await? {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("You are sending prompts too fast; try again in {wait} s."),
            ));
        }
        // Kept before the prompt is recorded: the room log refers to them by id.
        let mut refs = Vec::with_capacity(images.len());
        for (mime_type, data) in images {
            let id = uuid::Uuid::new_v4().simple().to_string();
            store::images::insert(self.pool(), workspace_id, &id, &mime_type, &data).await?;
            refs.push(crate::model::ImageRef { id, mime_type });
        }
        let ids: Vec<String> = refs.iter().map(|r| r.id.clone()).collect();
        self.registry().sandboxes().recheck_unreachable().await;
        match self
            .registry()
            .prompt(&key, grant.member, text, team_only, refs, mentions)
            .await
        {
            Ok(seq) => Ok(seq),
            Err(e) => {
                // A refused prompt is not in the log: its images would be referenced by nothing.
                if e.refused()
                    && !ids.is_empty()
                    && let Err(gone) = store::images::delete(self.pool(), workspace_id, &ids).await
                {
                    tracing::warn!(workspace = workspace_id, error = %gone, "could not remove a refused prompt's images");
                }
                Err(e.into())
            }
        }
    }

    /// An image of a workspace, for its members.
    pub async fn image(
        &self,
        caller: &Caller,
        workspace_id: &str,
        image_id: &str,
    ) -> Result<(String, Vec<u8>), ApiError> {
        self.auth()
            .require(caller, workspace_id, Need::View)
            .await?;
        store::images::load(self.pool(), workspace_id, image_id)
            .await?
            .ok_or_else(|| ApiError::not_found("There is no such image."))
    }

    /// The client's address: the TCP peer, or behind a trusted load balancer the address it
    /// added last to `X-Forwarded-For` (what a client wrote there itself comes before it).
    pub fn client_ip(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        if !self.0.trusted_proxies.contains(&peer) {
            return peer;
        }
        client_ip::rightmost_x_forwarded_for(headers).unwrap_or(peer)
    }

    /// Counts a live stream against its address and its person (on every node), unless either
    /// has too many.
    pub async fn open_stream(
        &self,
        ip: std::net::IpAddr,
        person: Option<&str>,
    ) -> Result<(Counting, Option<Counting>), ApiError> {
        let too_many = || {
            ApiError::new(
                ErrorCode::RateLimited,
                "Too many live streams are open from here; close some tabs.",
            )
        };
        let limits = &self.0.limits;
        let by_ip = self
            .0
            .counts
            .open(
                Counted::StreamsOfIp,
                &ip.to_string(),
                limits.max_streams_per_ip,
            )
            .await
            .ok_or_else(too_many)?;
        let by_person = match person {
            Some(p) => Some(
                self.0
                    .counts
                    .open(Counted::StreamsOfPerson, p, limits.max_streams_per_person)
                    .await
                    .ok_or_else(too_many)?,
            ),
            None => None,
        };
        Ok((by_ip, by_person))
    }

    pub async fn create_workspace(
        &self,
        caller: &Caller,
        agent: Option<&str>,
        directory: Option<&str>,
        name: Option<&str>,
    ) -> Result<CreatedWorkspace, ApiError> {
        let owner = self.auth().creator(caller)?;
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => Some(crate::model::valid_workspace_name(n).ok_or_else(bad_name)?),
            None => None,
        };
        let agent = agent
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(DEFAULT_AGENT);
        if !is_valid_agent_id(agent) {
            return Err(ApiError::bad_request(
                "The agent must be a short id such as `mock` or `claude` (letters, digits, - and _).",
            ));
        }
        let picked = match directory.map(str::trim).filter(|d| !d.is_empty()) {
            Some(dir) => Some(self.project_dir(dir).await?),
            None => None,
        };
        // Refuse agents sandbox-agent does not know; if it cannot be asked now, let it decide later.
        if let Ok(known) = self.registry().sandboxes().list_agents().await
            && !known.iter().any(|a| a.id == agent)
        {
            let ids: Vec<&str> = known.iter().map(|a| a.id.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "sandbox-agent has no agent `{agent}`; it has {}.",
                ids.join(", ")
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Named after the directory it works in, when the owner picked one.
        let name = name.map(str::to_string).unwrap_or_else(|| {
            picked
                .as_deref()
                .and_then(|d| std::path::Path::new(d).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("Workspace {}", &id[..6]))
        });
        let placement = self.registry().sandboxes().place(picked.is_some()).await?;
        if picked.is_none() && placement.host.is_none() {
            // The agent works in the workspace's own directory, never in Huddle's.
            let dir = self.registry().working_dir(&id);
            if let Err(e) = tokio::fs::create_dir_all(&dir).await {
                tracing::error!(dir = %dir.display(), error = %e, "cannot make the workspace's directory");
                return Err(ApiError::internal());
            }
        }
        let row = self
            .auth()
            .insert_workspace(
                owner,
                &store::NewWorkspace {
                    id: &id,
                    name: &name,
                    agent,
                    sandbox_id: &placement.sandbox_id,
                    sandbox_base_url: placement
                        .host
                        .as_ref()
                        .map(|h| h.url.as_str())
                        .unwrap_or("local"),
                    working_dir: picked.as_deref(),
                    sandbox_provider: placement.provider,
                    sandbox_host: placement.host.as_ref().map(|h| h.id.as_str()),
                },
            )
            .await?;
        tracing::info!(workspace = %row.id, agent = %row.agent, owner = %owner.id, "workspace created");
        Ok(CreatedWorkspace {
            url: workspace_url(&row.id),
            workspace_id: row.id,
        })
    }

    /// Deletes a workspace (its owner only): its room closes, its agent and sandbox stop, and
    /// its log, images, invites, tokens, sandbox and working directory go.
    pub async fn delete_workspace(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.auth().require(caller, id, Need::Own).await?;
        let row = store::find_workspace(&self.0.pool, id)
            .await?
            .ok_or_else(|| ApiError::not_found("There is no such workspace."))?;
        let registry = self.registry();
        registry.retire(id).await;
        let here = match &row.working_dir {
            Some(dir) => dir.into(),
            None => registry.working_dir(id),
        };
        let cwd = registry.sandboxes().working_dir(&row, here);
        let deleted = crate::sandbox::store::delete_workspace(&self.0.pool, id).await;
        if let Err(e) = deleted {
            registry.reopen(id).await;
            return Err(e.into());
        }
        registry.sandboxes().destroy(&row, &cwd).await;
        // A directory the owner picked is theirs: only the workspace's own one goes.
        if row.working_dir.is_none()
            && row.sandbox_host.is_none()
            && let Err(e) = tokio::fs::remove_dir_all(&cwd).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(workspace = %id, error = %e, "could not remove the workspace's directory");
        }
        registry.reopen(id).await;
        tracing::info!(workspace = %id, "workspace deleted");
        Ok(())
    }

    /// The instance owner's sandbox hosts.
    pub async fn sandbox_hosts(
        &self,
        caller: &Caller,
    ) -> Result<Vec<crate::model::SandboxHostInfo>, ApiError> {
        self.instance_owner(caller)?;
        Ok(self.registry().sandboxes().list_hosts().await?)
    }

    /// Registers a sandbox host (the instance owner only): new workspaces may be placed on it.
    pub async fn add_sandbox_host(
        &self,
        caller: &Caller,
        url: &str,
        token: Option<String>,
        cwd_root: Option<String>,
    ) -> Result<crate::model::SandboxHostInfo, ApiError> {
        self.instance_owner(caller)?;
        if url.len() > 2048 || token.as_ref().is_some_and(|t| t.len() > 1024) {
            return Err(ApiError::bad_request("The URL or token is too long."));
        }
        if let Some(root) = &cwd_root
            && (!root.starts_with('/') || root.len() > 1024)
        {
            return Err(ApiError::bad_request(
                "The working-directory root must be an absolute path.",
            ));
        }
        Ok(self
            .registry()
            .sandboxes()
            .add_host(url, token, cwd_root)
            .await?)
    }

    /// Moves a workspace's sandbox to another host (the instance owner only); the room says
    /// whether the agent's memory came along.
    pub async fn move_workspace(
        &self,
        caller: &Caller,
        id: &str,
        host: &str,
    ) -> Result<WorkspaceSummary, ApiError> {
        self.instance_owner(caller)?;
        let row = store::find_workspace(&self.0.pool, id)
            .await?
            .ok_or_else(|| ApiError::not_found("There is no such workspace."))?;
        if row.working_dir.is_some() {
            return Err(ApiError::bad_request(
                "This workspace works in a directory on this machine; it cannot move.",
            ));
        }
        let registry = self.registry();
        let target = registry.sandboxes().host_for_move(host).await?;
        let from = row.sandbox().host;
        if row.sandbox_host.as_deref() == Some(target.id.as_str()) {
            return self.workspace(caller, id).await;
        }
        registry.retire(id).await;
        let moved = crate::sandbox::store::move_to(&self.0.pool, id, &target).await;
        registry.reopen(id).await;
        moved?;
        let message = format!(
            "The sandbox moved from {from} to {}. The agent's own memory stays behind: its next session gets the recent conversation replayed instead.",
            target.id
        );
        let key = self.room_key(id, None).await?;
        if let Err(e) = registry
            .notice(&key, crate::model::NoticeLevel::Info, message)
            .await
        {
            tracing::warn!(workspace = %id, error = %e, "the room could not be told it moved");
        }
        tracing::info!(workspace = %id, from = %from, to = %target.id, "workspace moved");
        self.workspace(caller, id).await
    }

    fn instance_owner(&self, caller: &Caller) -> Result<(), ApiError> {
        if crate::auth::Auth::person(caller)?.instance_owner {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "Only the instance owner may manage sandbox hosts.",
            ))
        }
    }

    /// An existing directory under HUDDLE_PROJECTS_ROOT (relative to it, or absolute).
    async fn project_dir(&self, dir: &str) -> Result<String, ApiError> {
        let Some(root) = &self.0.projects_root else {
            return Err(ApiError::bad_request(
                "Picking a directory is not allowed on this server (HUDDLE_PROJECTS_ROOT is not set).",
            ));
        };
        let outside = || {
            ApiError::bad_request(
                "The directory must be an existing directory under the projects root.",
            )
        };
        let root = tokio::fs::canonicalize(root).await.map_err(|e| {
            tracing::error!(error = %e, "HUDDLE_PROJECTS_ROOT cannot be read");
            outside()
        })?;
        // Resolved (symbolic links too) before the check, so `..` and links cannot leave the root.
        let path = tokio::fs::canonicalize(root.join(dir))
            .await
            .map_err(|_| outside())?;
        let is_dir = tokio::fs::metadata(&path)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false);
        // The root itself is no project: each workspace gets a directory of its own under it.
        if !is_dir || !path.starts_with(&root) || path == root {
            return Err(outside());
        }
        Ok(path.display().to_string())
    }

    /// Gives the workspace a new name (its owner only); the room shows it at once.
    pub async fn rename_workspace(
        &self,
        caller: &Caller,
        id: &str,
        name: &str,
    ) -> Result<WorkspaceSummary, ApiError> {
        let grant = self.auth().require(caller, id, Need::Own).await?;
        let name = crate::model::valid_workspace_name(name).ok_or_else(bad_name)?;
        if !store::rename_workspace(&self.0.pool, id, name).await? {
            return Err(ApiError::not_found("There is no such workspace."));
        }
        let key = self.room_key(id, None).await?;
        if let Err(e) = self
            .registry()
            .workspace_renamed(&key, grant.member, name.to_string())
            .await
        {
            tracing::warn!(workspace = %id, error = %e, "the room could not be told of its new name");
        }
        self.workspace(caller, id).await
    }

    pub async fn workspace(&self, caller: &Caller, id: &str) -> Result<WorkspaceSummary, ApiError> {
        self.auth().require(caller, id, Need::View).await?;
        store::find_workspace(&self.0.pool, id)
            .await?
            .map(Into::into)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "There is no workspace {}.",
                    crate::error::quoted(id)
                ))
            })
    }
}

fn bad_name() -> ApiError {
    ApiError::bad_request(format!(
        "A workspace name is 1 to {} characters, with no control characters.",
        crate::model::MAX_WORKSPACE_NAME_CHARS
    ))
}

/// Checks a prompt's images: how many, their types, their size; decodes them.
fn check_images(
    images: Vec<crate::model::ImageUpload>,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    use crate::model::{IMAGE_TYPES, MAX_IMAGE_BYTES, MAX_IMAGES};
    use base64::Engine;
    if images.len() > MAX_IMAGES {
        return Err(ApiError::bad_request(format!(
            "A prompt carries at most {MAX_IMAGES} images."
        )));
    }
    images
        .into_iter()
        .map(|image| {
            if !IMAGE_TYPES.contains(&image.mime_type.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Images must be PNG, JPEG, GIF or WebP ({} was sent).",
                    image.mime_type.chars().take(40).collect::<String>()
                )));
            }
            let too_large = || {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("An image may be at most {} KB.", MAX_IMAGE_BYTES / 1000),
                )
            };
            // A quick bound before decoding: base64 is 4/3 of the bytes.
            if image.data.len() > MAX_IMAGE_BYTES / 3 * 4 + 4 {
                return Err(too_large());
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(image.data.trim())
                .map_err(|_| ApiError::bad_request("An image's data is not valid base64."))?;
            if data.len() > MAX_IMAGE_BYTES {
                return Err(too_large());
            }
            // What the bytes are, not only what they are said to be (an SVG or HTML page said to
            // be a PNG is neither kept nor sent to the agent).
            if infer::get(&data).map(|t| t.mime_type()) != Some(image.mime_type.as_str()) {
                return Err(ApiError::bad_request(
                    "An image's bytes are not the PNG, JPEG, GIF or WebP image it says it is.",
                ));
            }
            Ok((image.mime_type, data))
        })
        .collect()
}

/// About how much text a page of the room carries (the first page, and each older one).
const PAGE_TEXT_BYTES: usize = 48 * 1024;

/// Finished markdown of these rows, rendered and sanitised.
fn render_finished(items: &[crate::timeline::Item]) -> Vec<(String, String)> {
    items
        .iter()
        .flat_map(crate::timeline::finished_markdown)
        .map(|(key, text)| (key, crate::markdown::render(&text)))
        .collect()
}

/// The HTTP status an error code stands for.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
