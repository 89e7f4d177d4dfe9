//! Postgres: the connection pool, migrations, the workspaces table, and the tables the rooms keep
//! (their log, their recoverable state, who owns each one).

pub mod images;
pub mod inbox;
pub mod jsonb;
pub mod leases;
pub mod rates;
pub mod room_log;
pub mod room_state;
pub mod threads;

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::model::WorkspaceSummary;

/// Connections of the main pool.
pub const POOL_CONNECTIONS: u32 = 16;

/// How long a request waits for a database connection: with Postgres down, callers hear so fast.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A write fenced by a lease that this process no longer holds.
    #[error("the workspace is owned by another process")]
    NotOwner,
}

impl StoreError {
    /// Whether trying again later may succeed (the server or the network), as opposed to a value
    /// or statement Postgres refuses, which would be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => is_transient(e),
            StoreError::Migrate(_) | StoreError::Corrupt(_) | StoreError::NotOwner => false,
        }
    }
}

/// Connection faults, timeouts and server shutdown are transient; data and constraint errors not.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P: operator intervention
            // (shutdown, cannot connect now); 40001/40P01: serialization failure, deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// Connects to Postgres and brings its schema up to date.
/// See [`connect`]: under the lease's time to live, so its lock is free when it expires.
const IDLE_IN_TRANSACTION_MS: &str = "1500";

pub async fn connect(url: &str) -> Result<PgPool, StoreError> {
    // A node cut off mid-transaction would hold its row locks (the workspace lease's among them)
    // until TCP gave up, and no other node could take its workspaces over: Postgres ends such a
    // session before the lease expires. Huddle's transactions never wait on anything else.
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?.options([(
        "idle_in_transaction_session_timeout",
        IDLE_IN_TRANSACTION_MS,
    )]);
    let pool = PgPoolOptions::new()
        .max_connections(POOL_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Connections of their own for the beats that say this node is alive and still holds its
/// workspaces' leases, on the same database as `pool`: a node whose pool is taken by a burst of
/// requests must not let its workspaces go (nor look dead) for want of a connection.
pub fn heartbeat_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(HEARTBEAT_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// One renewal takes about a millisecond: a few connections keep a thousand leases renewed.
const HEARTBEAT_CONNECTIONS: u32 = 4;

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub agent: String,
    pub sandbox_id: String,
    pub sandbox_base_url: String,
    pub created_at_ms: i64,
    /// The directory the owner picked; `None`: the workspace's own under the data directory.
    pub working_dir: Option<String>,
    /// `local`, `none` or `remote` (its sandbox's provider).
    pub sandbox_provider: String,
    /// The host its sandbox is placed on; `None`: this machine.
    pub sandbox_host: Option<String>,
}

impl WorkspaceRow {
    pub fn sandbox(&self) -> crate::model::SandboxSummary {
        crate::model::SandboxSummary {
            id: self.sandbox_id.clone(),
            provider: crate::model::SandboxProvider::parse(&self.sandbox_provider)
                .unwrap_or_default(),
            host: self.sandbox_host.clone().unwrap_or_else(|| "local".into()),
        }
    }
}

impl From<WorkspaceRow> for WorkspaceSummary {
    fn from(row: WorkspaceRow) -> Self {
        WorkspaceSummary {
            sandbox: row.sandbox(),
            workspace_id: row.id,
            name: row.name,
            agent: row.agent,
            sandbox_id: row.sandbox_id,
            created_at: row.created_at_ms,
        }
    }
}

const WORKSPACE_COLUMNS: &str = "w.id, w.name, w.agent, w.sandbox_id, w.sandbox_base_url, \
     (extract(epoch from w.created_at) * 1000)::bigint AS created_at_ms, w.working_dir, \
     COALESCE(s.provider, 'local') AS sandbox_provider, s.host_id AS sandbox_host \
     FROM workspaces w LEFT JOIN sandboxes s ON s.workspace_id = w.id";

/// A workspace to insert, with its sandbox.
pub struct NewWorkspace<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub agent: &'a str,
    pub sandbox_id: &'a str,
    pub sandbox_base_url: &'a str,
    pub working_dir: Option<&'a str>,
    pub sandbox_provider: crate::model::SandboxProvider,
    pub sandbox_host: Option<&'a str>,
}

/// Inserts a workspace and its sandbox (in the caller's transaction).
pub async fn insert_workspace(
    tx: &mut sqlx::PgConnection,
    w: &NewWorkspace<'_>,
) -> Result<WorkspaceRow, StoreError> {
    sqlx::query(
        "INSERT INTO workspaces (id, agent, sandbox_id, sandbox_base_url, working_dir, name) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(w.id)
    .bind(w.agent)
    .bind(w.sandbox_id)
    .bind(w.sandbox_base_url)
    .bind(w.working_dir)
    .bind(w.name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO sandboxes (id, workspace_id, provider, host_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(w.sandbox_id)
    .bind(w.id)
    .bind(w.sandbox_provider.as_str())
    .bind(w.sandbox_host)
    .execute(&mut *tx)
    .await?;
    // Its first thread: the agent session every workspace had before threads.
    let thread_id = uuid::Uuid::new_v4().simple().to_string();
    threads::insert(
        tx,
        &threads::NewThread {
            id: &thread_id,
            workspace_id: w.id,
            agent: w.agent,
            session_id: &crate::room::first_session_id(w.id),
            name: None,
            forked_from: None,
            created_by: None,
        },
    )
    .await?;
    let sql = format!("SELECT {WORKSPACE_COLUMNS} WHERE w.id = $1");
    Ok(sqlx::query_as(&sql).bind(w.id).fetch_one(&mut *tx).await?)
}

/// Gives a workspace a new name; false when there is no such workspace.
pub async fn rename_workspace(pool: &PgPool, id: &str, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE workspaces SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find_workspace(pool: &PgPool, id: &str) -> Result<Option<WorkspaceRow>, StoreError> {
    let sql = format!("SELECT {WORKSPACE_COLUMNS} WHERE w.id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?)
}
