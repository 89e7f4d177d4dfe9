//! People, memberships, invites and API tokens in Postgres. Secrets are stored as SHA-256 only.

use sqlx::PgPool;

use crate::model::{InviteView, PersonView, Role, TokenView};
use crate::store::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PersonRow {
    pub id: String,
    pub display_name: String,
    pub instance_owner: bool,
    pub may_create: bool,
    pub is_bot: bool,
}

pub async fn person(pool: &PgPool, id: &str) -> Result<Option<PersonRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, display_name, instance_owner, may_create, is_bot FROM people WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn insert_person(pool: &PgPool, id: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO people (id, display_name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// The operator behind `HUDDLE_ADMIN_TOKEN`: one fixed person with the instance owner's rights.
pub async fn ensure_operator(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO people (id, display_name, instance_owner, may_create, is_bot) \
         VALUES ($1, 'Operator', true, true, true) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn rename(pool: &PgPool, id: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE people SET display_name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn make_instance_owner(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE people SET instance_owner = true, may_create = true WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// What a person may do in a workspace: `None` when the workspace does not exist.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessRow {
    pub approvers_only: bool,
    pub role: Option<String>,
    pub approver: Option<bool>,
}

pub async fn access(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
) -> Result<Option<AccessRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT w.approvers_only, m.role, m.approver FROM workspaces w \
         LEFT JOIN memberships m ON m.workspace_id = w.id AND m.person_id = $2 WHERE w.id = $1",
    )
    .bind(workspace_id)
    .bind(person_id)
    .fetch_optional(pool)
    .await?)
}

/// Adds someone to a workspace. Someone already in keeps their role, except that a member link
/// makes a viewer a member.
pub async fn join(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
    role: Role,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO memberships (workspace_id, person_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (workspace_id, person_id) DO UPDATE SET role = EXCLUDED.role \
         WHERE memberships.role = 'viewer' AND EXCLUDED.role = 'member'",
    )
    .bind(workspace_id)
    .bind(person_id)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// A new workspace and its owner's membership, in one transaction.
pub async fn insert_workspace_with_owner(
    pool: &PgPool,
    row: &crate::store::NewWorkspace<'_>,
    owner: &str,
) -> Result<crate::store::WorkspaceRow, StoreError> {
    let mut tx = pool.begin().await?;
    let ws = crate::store::insert_workspace(&mut tx, row).await?;
    sqlx::query("INSERT INTO memberships (workspace_id, person_id, role) VALUES ($1, $2, 'owner')")
        .bind(&ws.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ws)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MyWorkspaceRow {
    pub id: String,
    pub name: String,
    /// When the room last logged something (its creation when nothing yet).
    pub last_activity_ms: i64,
    pub agent: String,
    pub role: String,
    pub created_at_ms: i64,
}

pub async fn my_workspaces(
    pool: &PgPool,
    person_id: &str,
) -> Result<Vec<MyWorkspaceRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT w.id, w.name, w.agent, m.role, \
         (extract(epoch from w.created_at) * 1000)::bigint AS created_at_ms, \
         COALESCE((SELECT max((SELECT r.created_at FROM room_log r WHERE r.thread_id = t.id \
                   ORDER BY r.seq DESC LIMIT 1)) FROM threads t WHERE t.workspace_id = w.id), \
                  (extract(epoch from w.created_at) * 1000)::bigint) AS last_activity_ms \
         FROM memberships m JOIN workspaces w ON w.id = m.workspace_id \
         WHERE m.person_id = $1 ORDER BY last_activity_ms DESC LIMIT 100",
    )
    .bind(person_id)
    .fetch_all(pool)
    .await?)
}

pub async fn people(pool: &PgPool, workspace_id: &str) -> Result<Vec<PersonView>, StoreError> {
    let rows: Vec<(String, String, String, bool, bool)> = sqlx::query_as(
        "SELECT p.id, p.display_name, m.role, m.approver, p.is_bot FROM memberships m \
         JOIN people p ON p.id = m.person_id WHERE m.workspace_id = $1 ORDER BY m.created_at",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(person_id, display_name, role, approver, is_bot)| {
            Some(PersonView {
                person_id,
                display_name,
                role: Role::parse(&role)?,
                approver,
                is_bot,
            })
        })
        .collect())
}

pub async fn owners(pool: &PgPool, workspace_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await?)
}

/// Whether someone had a membership to change.
pub async fn set_role(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
    role: Role,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE memberships SET role = $3 WHERE workspace_id = $1 AND person_id = $2")
            .bind(workspace_id)
            .bind(person_id)
            .bind(role.as_str())
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_approver(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
    approver: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE memberships SET approver = $3 WHERE workspace_id = $1 AND person_id = $2",
    )
    .bind(workspace_id)
    .bind(person_id)
    .bind(approver)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn approvers_only(pool: &PgPool, workspace_id: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT approvers_only FROM workspaces WHERE id = $1")
            .bind(workspace_id)
            .fetch_optional(pool)
            .await?
            .unwrap_or(false),
    )
}

pub async fn set_approvers_only(
    pool: &PgPool,
    workspace_id: &str,
    on: bool,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE workspaces SET approvers_only = $2 WHERE id = $1")
        .bind(workspace_id)
        .bind(on)
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes someone, and revokes the token if they are a bot.
pub async fn remove(
    pool: &PgPool,
    workspace_id: &str,
    person_id: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND person_id = $2")
        .bind(workspace_id)
        .bind(person_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE workspace_id = $1 AND person_id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(workspace_id)
    .bind(person_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InviteRow {
    pub id: String,
    pub workspace_id: Option<String>,
    pub role: String,
    pub revoked: bool,
}

pub async fn insert_invite(
    pool: &PgPool,
    id: &str,
    secret_hash: &str,
    workspace_id: Option<&str>,
    role: &str,
    created_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO invites (id, secret_hash, workspace_id, role, created_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(secret_hash)
    .bind(workspace_id)
    .bind(role)
    .bind(created_by)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn invite_by_secret(
    pool: &PgPool,
    secret_hash: &str,
) -> Result<Option<InviteRow>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE invites SET uses = uses + (CASE WHEN revoked_at IS NULL THEN 1 ELSE 0 END) \
         WHERE secret_hash = $1 \
         RETURNING id, workspace_id, role, revoked_at IS NOT NULL AS revoked",
    )
    .bind(secret_hash)
    .fetch_optional(pool)
    .await?)
}

pub async fn invite(
    pool: &PgPool,
    workspace_id: Option<&str>,
    id: &str,
) -> Result<Option<InviteRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, workspace_id, role, revoked_at IS NOT NULL AS revoked FROM invites \
         WHERE id = $1 AND workspace_id IS NOT DISTINCT FROM $2",
    )
    .bind(id)
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?)
}

pub async fn invites(
    pool: &PgPool,
    workspace_id: Option<&str>,
) -> Result<Vec<InviteView>, StoreError> {
    let rows: Vec<(String, String, i64, i32, bool)> = sqlx::query_as(
        "SELECT id, role, (extract(epoch from created_at) * 1000)::bigint, uses, \
         revoked_at IS NOT NULL FROM invites WHERE workspace_id IS NOT DISTINCT FROM $1 \
         ORDER BY created_at DESC LIMIT 200",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, role, created_at, uses, revoked)| InviteView {
            id,
            role,
            created_at,
            uses,
            revoked,
        })
        .collect())
}

pub async fn revoke_invite(
    pool: &PgPool,
    workspace_id: Option<&str>,
    id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE invites SET revoked_at = coalesce(revoked_at, now()) \
         WHERE id = $1 AND workspace_id IS NOT DISTINCT FROM $2",
    )
    .bind(id)
    .bind(workspace_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A bot person, its membership and its token, in one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn insert_token(
    pool: &PgPool,
    id: &str,
    secret_hash: &str,
    workspace_id: &str,
    person_id: &str,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO people (id, display_name, is_bot) VALUES ($1, $2, true)")
        .bind(person_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO memberships (workspace_id, person_id, role) VALUES ($1, $2, $3)")
        .bind(workspace_id)
        .bind(person_id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO api_tokens (id, secret_hash, workspace_id, person_id, created_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(secret_hash)
    .bind(workspace_id)
    .bind(person_id)
    .bind(created_by)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The bot a live token stands for.
pub async fn token_person(
    pool: &PgPool,
    secret_hash: &str,
) -> Result<Option<PersonRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.display_name, p.instance_owner, p.may_create, p.is_bot FROM api_tokens t \
         JOIN people p ON p.id = t.person_id WHERE t.secret_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(secret_hash)
    .fetch_optional(pool)
    .await?)
}

pub async fn tokens(pool: &PgPool, workspace_id: &str) -> Result<Vec<TokenView>, StoreError> {
    let rows: Vec<(String, String, Option<String>, i64, bool)> = sqlx::query_as(
        "SELECT t.id, p.display_name, m.role, (extract(epoch from t.created_at) * 1000)::bigint, \
         t.revoked_at IS NOT NULL FROM api_tokens t JOIN people p ON p.id = t.person_id \
         LEFT JOIN memberships m ON m.workspace_id = t.workspace_id AND m.person_id = t.person_id \
         WHERE t.workspace_id = $1 ORDER BY t.created_at DESC LIMIT 200",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, role, created_at, revoked)| TokenView {
            id,
            name,
            role: role
                .as_deref()
                .and_then(Role::parse)
                .unwrap_or(Role::Viewer),
            created_at,
            revoked,
        })
        .collect())
}

/// Revokes a token and removes its bot from the workspace; the bot's id, if there was one.
pub async fn revoke_token(
    pool: &PgPool,
    workspace_id: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let person: Option<String> = sqlx::query_scalar(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) \
         WHERE id = $1 AND workspace_id = $2 RETURNING person_id",
    )
    .bind(id)
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?;
    if let Some(p) = &person {
        remove(pool, workspace_id, p).await?;
    }
    Ok(person)
}

/// Whether a running node's sign-in link has this hash.
pub async fn sign_in_link_live(pool: &PgPool, hash: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sign_in_links WHERE hash = $1 AND expires_at > now())",
    )
    .bind(hash)
    .fetch_one(pool)
    .await?)
}

/// Keeps a running node's sign-in link valid for 30 s more (renewed every 10 s).
pub async fn renew_sign_in_link(pool: &PgPool, hash: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sign_in_links (hash, expires_at) VALUES ($1, now() + interval '30 seconds') \
         ON CONFLICT (hash) DO UPDATE SET expires_at = EXCLUDED.expires_at",
    )
    .bind(hash)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM sign_in_links WHERE expires_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    Ok(())
}

/// A stopping node's link ends.
pub async fn end_sign_in_link(pool: &PgPool, hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sign_in_links WHERE hash = $1")
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}
