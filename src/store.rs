//! Postgres: the connection pool, migrations, and the workspaces table.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::model::WorkspaceSummary;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Connects to Postgres and brings its schema up to date.
pub async fn connect(url: &str) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub agent: String,
    pub sandbox_id: String,
    pub sandbox_base_url: String,
    pub created_at_ms: i64,
}

impl From<WorkspaceRow> for WorkspaceSummary {
    fn from(row: WorkspaceRow) -> Self {
        WorkspaceSummary {
            workspace_id: row.id,
            agent: row.agent,
            sandbox_id: row.sandbox_id,
            created_at: row.created_at_ms,
        }
    }
}

const WORKSPACE_COLUMNS: &str = "id, agent, sandbox_id, sandbox_base_url, \
     (extract(epoch from created_at) * 1000)::bigint AS created_at_ms";

pub async fn insert_workspace(
    pool: &PgPool,
    id: &str,
    agent: &str,
    sandbox_id: &str,
    sandbox_base_url: &str,
) -> Result<WorkspaceRow, StoreError> {
    let sql = format!(
        "INSERT INTO workspaces (id, agent, sandbox_id, sandbox_base_url) VALUES ($1, $2, $3, $4) \
         RETURNING {WORKSPACE_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(agent)
        .bind(sandbox_id)
        .bind(sandbox_base_url)
        .fetch_one(pool)
        .await?)
}

pub async fn find_workspace(pool: &PgPool, id: &str) -> Result<Option<WorkspaceRow>, StoreError> {
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?)
}
