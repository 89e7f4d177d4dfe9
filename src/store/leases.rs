//! Who owns a workspace: one live Huddle process at a time holds its lease, renewed by heartbeat.
//! A process that dies stops renewing, and the lease is free again once it expires. Room-log
//! writes are fenced by it, so a process that was cut off from Postgres while another took over
//! cannot write once it is back.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// How long a lease lasts without renewal: a dead owner's workspaces free up within this.
pub const LEASE_TTL: Duration = Duration::from_secs(8);
/// How often a live owner renews.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Takes the lease of a workspace for `owner`, or renews it; false when another live owner has it.
pub async fn acquire(pool: &PgPool, workspace_id: &str, owner: &str) -> Result<bool, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "INSERT INTO workspace_leases (workspace_id, owner, expires_at) \
         VALUES ($1, $2, now() + make_interval(secs => $3)) \
         ON CONFLICT (workspace_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
         WHERE workspace_leases.owner = EXCLUDED.owner OR workspace_leases.expires_at < now() \
         RETURNING owner",
    )
    .bind(workspace_id)
    .bind(owner)
    .bind(LEASE_TTL.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Inside a transaction: holds the lease row (so it cannot change hands before the commit) and
/// checks that `owner` has it. A process that lost its lease while cut off from Postgres finds out
/// here, before it writes anything.
pub async fn fence(
    tx: &mut sqlx::PgConnection,
    workspace_id: &str,
    owner: &str,
) -> Result<(), StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT owner FROM workspace_leases WHERE workspace_id = $1 FOR SHARE")
            .bind(workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
    match row {
        Some((holder,)) if holder == owner => Ok(()),
        _ => Err(StoreError::NotOwner),
    }
}

/// Gives the lease up (an actor going to sleep or shutting down).
pub async fn release(pool: &PgPool, workspace_id: &str, owner: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM workspace_leases WHERE workspace_id = $1 AND owner = $2")
        .bind(workspace_id)
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}
