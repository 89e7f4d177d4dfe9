//! Finds or wakes the one actor of each workspace, under an ownership lease in Postgres so that a
//! second Huddle process on the same database never runs a second actor for it. Calls carry a
//! deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::actor::{Actor, Internal};
use super::handle::{Command, Reply, RoomError, RoomHandle, Subscription};
use crate::model::{Member, WorkspaceInfo, is_valid_workspace_id};
use crate::sandbox::Sandboxes;
use crate::store::{self, leases};

const MAILBOX: usize = 256;
/// How long a caller waits for an actor's answer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the actors to close their sessions and flush their logs.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

/// What the actors need from the server.
pub struct RoomDeps {
    pub pool: PgPool,
    /// Where each workspace's agent runs.
    pub sandboxes: Sandboxes,
    /// How long a room with nobody in it and nothing running stays awake.
    pub idle_sleep: Duration,
    /// Where each workspace's working directory is (`<dir>/<workspace id>`): the agent's `cwd`.
    pub workspaces_dir: std::path::PathBuf,
    /// Prompts that may wait behind a running turn.
    pub max_queue: usize,
    /// Where owners may pick a workspace's directory: a picked one is checked to be under it
    /// again at every session start (it may have been swapped for a link since).
    pub projects_root: Option<std::path::PathBuf>,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    deps: RoomDeps,
    /// This process, as the owner of leases.
    owner: String,
    actors: Mutex<HashMap<String, RoomHandle>>,
    /// One awake period per workspace at a time (see [`Registry::awake_period`]).
    awake: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Workspaces being deleted or moved: they do not wake meanwhile.
    retiring: Mutex<std::collections::HashSet<String>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Registry {
    pub fn new(deps: RoomDeps) -> Self {
        let owner = leases::owner_id();
        Self {
            inner: Arc::new(Inner {
                deps,
                owner,
                actors: Mutex::new(HashMap::new()),
                retiring: Mutex::new(Default::default()),
                awake: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
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

    /// The live actor of a workspace, woken if needed. Unknown workspaces are refused, and so are
    /// workspaces another live Huddle process owns.
    async fn handle(&self, id: &str) -> Result<RoomHandle, RoomError> {
        if !is_valid_workspace_id(id) {
            return Err(RoomError::UnknownWorkspace(crate::error::quoted(id)));
        }
        if let Some(h) = self.live_handle(id) {
            return Ok(h);
        }
        if self.retiring().contains(id) {
            return Err(RoomError::Deleting);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(RoomError::Stopped);
        }
        let pool = self.pool();
        let row = store::find_workspace(pool, id)
            .await?
            .ok_or_else(|| RoomError::UnknownWorkspace(crate::error::quoted(id)))?;
        if !leases::acquire(pool, id, &self.inner.owner).await?
            && !leases::take_from_dead(pool, id, &self.inner.owner).await?
        {
            return Err(RoomError::OwnedElsewhere);
        }
        let mut actors = self.actors();
        if let Some(h) = actors.get(id).filter(|h| !h.is_closed()) {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = RoomHandle { tx };
        actors.insert(id.to_string(), handle.clone());
        drop(actors);
        let registry = self.clone();
        let me = handle.clone();
        self.inner.tasks.spawn(async move {
            let id = row.id.clone();
            // A panic stays inside this task: the others run on, and the next call starts it again.
            let result = tokio::spawn(Actor::run(row, registry.clone(), me.clone(), rx)).await;
            if let Err(e) = result {
                tracing::error!(workspace = %id, error = %e, "workspace actor crashed");
                registry.release_lease(&id).await;
            }
            registry.forget(&id, &me);
        });
        Ok(handle)
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

    /// Renews the actor's lease until `stop`; tells the actor when it is lost.
    pub(super) fn spawn_heartbeat(
        &self,
        id: &str,
        internal: mpsc::UnboundedSender<Internal>,
        stop: CancellationToken,
    ) {
        let pool = self.pool().clone();
        let owner = self.inner.owner.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(leases::HEARTBEAT) => {}
                }
                let renew =
                    tokio::time::timeout(leases::HEARTBEAT, leases::acquire(&pool, &id, &owner));
                match renew.await {
                    Ok(Ok(true)) => renewed = tokio::time::Instant::now(),
                    Ok(Ok(false)) => {
                        tracing::error!(workspace = %id, "another Huddle process took this workspace");
                        let _ = internal.send(Internal::LeaseLost);
                        return;
                    }
                    // Postgres is unreachable: nobody else can take the lease meanwhile, and
                    // the room-log writes are fenced should someone take it once it is back.
                    _ => tracing::warn!(
                        workspace = %id,
                        unrenewed_ms = renewed.elapsed().as_millis() as u64,
                        "could not renew the workspace lease; retrying"
                    ),
                }
            }
        });
    }

    /// This process, as the owner of leases (writes are fenced with it).
    pub(super) fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub(super) async fn release_lease(&self, id: &str) {
        let release = leases::release(self.pool(), id, &self.inner.owner);
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
    async fn call<T>(&self, id: &str, make: impl Fn(Reply<T>) -> Command) -> Result<T, RoomError> {
        let attempt = async {
            for _ in 0..3 {
                let handle = self.handle(id).await?;
                let (tx, rx) = oneshot::channel();
                if handle.tx.send(make(tx)).await.is_err() {
                    self.forget(id, &handle);
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

    pub async fn info(&self, id: &str) -> Result<WorkspaceInfo, RoomError> {
        self.call(id, Command::Info).await
    }

    /// The status of a room that is awake (`working`, `idle`, ...), without waking one that
    /// sleeps.
    pub async fn status_if_awake(&self, id: &str) -> Option<String> {
        let handle = self.live_handle(id)?;
        let (tx, rx) = oneshot::channel();
        handle.tx.try_send(Command::Info(tx)).ok()?;
        let info = tokio::time::timeout(Duration::from_millis(500), rx).await;
        Some(info.ok()?.ok()?.ok()?.status)
    }

    /// The owner renamed the workspace: the room says so, and shows the new name.
    pub async fn workspace_renamed(
        &self,
        id: &str,
        member: Member,
        name: String,
    ) -> Result<(), RoomError> {
        self.call(id, |reply| Command::WorkspaceRenamed {
            member: member.clone(),
            name: name.clone(),
            reply,
        })
        .await
    }

    /// A person's message: a prompt for the agent, or with `team_only` for the team (the agent
    /// gets it as context with the next prompt).
    pub async fn prompt(
        &self,
        id: &str,
        member: Member,
        text: String,
        team_only: bool,
        images: Vec<crate::model::ImageRef>,
    ) -> Result<i64, RoomError> {
        self.call(id, |reply| Command::Prompt {
            member: member.clone(),
            text: text.clone(),
            team_only,
            images: images.clone(),
            reply,
        })
        .await
    }

    /// Stops the running turn; with `clear_queue`, the prompts waiting behind it go too.
    pub async fn cancel(
        &self,
        id: &str,
        member: Member,
        clear_queue: bool,
    ) -> Result<(), RoomError> {
        self.call(id, |reply| Command::Cancel {
            member: member.clone(),
            clear_queue,
            reply,
        })
        .await
    }

    /// Changes one of the agent session's options (mode, model), for everyone in the room.
    pub async fn set_option(
        &self,
        id: &str,
        member: Member,
        config_id: String,
        value: String,
    ) -> Result<(), RoomError> {
        self.call(id, |reply| Command::SetOption {
            member: member.clone(),
            config_id: config_id.clone(),
            value: value.clone(),
            reply,
        })
        .await
    }

    /// Takes a waiting prompt off the queue: its author may, and with `any` (the owner) anyone's.
    pub async fn remove_queued(
        &self,
        id: &str,
        member: Member,
        prompt_seq: i64,
        any: bool,
    ) -> Result<(), RoomError> {
        self.call(id, |reply| Command::RemoveQueued {
            member: member.clone(),
            prompt_seq,
            any,
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
    ) -> Result<(), RoomError> {
        self.call(id, |reply| Command::Permission {
            member: member.clone(),
            request_id: request_id.clone(),
            option_id: option_id.clone(),
            reply,
        })
        .await
    }

    /// Joins the room's live stream (anonymously with `None`: counted, not listed).
    pub async fn subscribe(
        &self,
        id: &str,
        member: Option<Member>,
    ) -> Result<Subscription, RoomError> {
        self.call(id, |reply| Command::Connect {
            member: member.clone(),
            reply,
        })
        .await
    }

    pub async fn typing(&self, id: &str, member: Member) -> Result<(), RoomError> {
        let handle = self.handle(id).await?;
        let _ = handle.tx.try_send(Command::Typing { member });
        Ok(())
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

    /// Held by an actor for its whole awake period: a room woken while its previous actor still
    /// closes (its agent, sandbox and lease) waits for that, instead of racing it.
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
    /// out; false when another process holds it.
    pub(super) async fn reacquire_lease(&self, id: &str) -> bool {
        let acquire = leases::acquire(self.pool(), id, &self.inner.owner);
        match tokio::time::timeout(leases::HEARTBEAT, acquire).await {
            Ok(Ok(held)) => held,
            // The database is slow or down: the heartbeat tells the actor if the lease is lost.
            _ => true,
        }
    }

    fn retiring(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner.retiring.lock().expect("registry lock")
    }

    /// Closes a room and keeps it closed until [`Registry::reopen`]: its agent and sandbox stop,
    /// its people's streams end. For deleting and moving a workspace.
    pub async fn retire(&self, id: &str) {
        self.retiring().insert(id.to_string());
        let Some(handle) = self.live_handle(id) else {
            return;
        };
        let (done, stopped) = oneshot::channel();
        if handle.tx.send(Command::Retire { done }).await.is_ok()
            && tokio::time::timeout(SHUTDOWN_DEADLINE * 2, stopped)
                .await
                .is_err()
        {
            tracing::warn!(workspace = %id, "the room did not stop in time");
        }
    }

    pub fn reopen(&self, id: &str) {
        self.retiring().remove(id);
    }

    /// A note in a room (woken for it).
    pub async fn notice(
        &self,
        id: &str,
        level: crate::model::NoticeLevel,
        message: String,
    ) -> Result<(), RoomError> {
        let handle = self.handle(id).await?;
        handle
            .tx
            .send(Command::Notice { level, message })
            .await
            .map_err(|_| RoomError::Stopped)
    }

    /// Makes a workspace's actor panic (tests of crash isolation).
    #[doc(hidden)]
    pub async fn crash_for_tests(&self, id: &str) -> Result<(), RoomError> {
        let handle = self.handle(id).await?;
        let _ = handle.tx.send(Command::Crash).await;
        Ok(())
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
