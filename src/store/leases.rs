//! Who owns a workspace: one live Huddle process at a time holds its lease, renewed by heartbeat.
//! A process that dies stops renewing, and the lease is free again once it expires. Room-log
//! writes are fenced by it, so a process that was cut off from Postgres while another took over
//! cannot write once it is back; and a process that cannot renew lets its workspaces go before
//! the lease expires ([`SELF_FENCE`]), so it stops talking to their agents first.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// How long a lease lasts without renewal: a dead owner's workspaces free up within this, and
/// another node takes them over (it sweeps for expired leases every [`SWEEP`]).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often a live owner renews.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long after its last renewal an owner that cannot renew lets its workspaces go: early
/// enough that it has stopped before the lease expires and another node can take over.
pub const SELF_FENCE: Duration = Duration::from_millis(1_500);
/// How often each node looks for leases whose owner stopped renewing them.
pub const SWEEP: Duration = Duration::from_millis(250);

/// Who holds a lease, and which time: `epoch` goes up each time the workspace changes hands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub owner: String,
    pub epoch: i64,
}

/// Takes the lease of a workspace for `owner` (reached at `node_url` by other nodes), or renews
/// it; its epoch, or None when another live owner has it. It waits for the writes that checked
/// the lease as it was ([`fence`]): none of them lands after it changed hands.
pub async fn acquire(
    pool: &PgPool,
    workspace_id: &str,
    owner: &str,
    node_url: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE waits for the fenced writes' FOR KEY SHARE, which an update that leaves the
    // key alone would not.
    sqlx::query("SELECT 1 FROM workspace_leases WHERE workspace_id = $1 FOR UPDATE")
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO workspace_leases (workspace_id, owner, expires_at, node_url) \
         VALUES ($1, $2, now() + make_interval(secs => $3), $4) \
         ON CONFLICT (workspace_id) DO UPDATE SET owner = EXCLUDED.owner, \
           expires_at = EXCLUDED.expires_at, node_url = EXCLUDED.node_url, \
           epoch = CASE WHEN workspace_leases.owner = EXCLUDED.owner \
                   THEN workspace_leases.epoch ELSE workspace_leases.epoch + 1 END \
         WHERE workspace_leases.owner = EXCLUDED.owner OR workspace_leases.expires_at < now() \
         RETURNING epoch",
    )
    .bind(workspace_id)
    .bind(owner)
    .bind(LEASE_TTL.as_secs_f64())
    .bind(node_url)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| r.0))
}

/// Extends the lease `owner` holds; its epoch, or None when it no longer holds it. It does not
/// wait for this owner's own writes in flight (their FOR KEY SHARE lets an update of the expiry
/// through): a slow write must not cost the node its lease.
pub async fn renew(
    pool: &PgPool,
    workspace_id: &str,
    owner: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE workspace_leases SET expires_at = now() + make_interval(secs => $3) \
         WHERE workspace_id = $1 AND owner = $2 RETURNING epoch",
    )
    .bind(workspace_id)
    .bind(owner)
    .bind(LEASE_TTL.as_secs_f64())
    .fetch_optional(pool)
    .await?)
}

/// Where the live owner of a workspace is reached: `None` when nobody holds it, or its lease
/// expired (its owner stopped renewing), or its owner cannot be reached.
pub async fn owner_url(pool: &PgPool, workspace_id: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT node_url FROM workspace_leases WHERE workspace_id = $1 AND expires_at >= now()",
    )
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Workspaces whose owner stopped renewing its lease (it died, or lost Postgres), at most `limit`.
pub async fn expired(pool: &PgPool, limit: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT workspace_id FROM workspace_leases WHERE expires_at < now() ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Inside a transaction: holds the lease row (so it cannot change hands before the commit, while
/// its owner may still extend it) and
/// checks that `held` is still who holds it, at the same epoch. A node that lost its lease while
/// cut off from Postgres finds out here, before it writes anything.
pub async fn fence(
    tx: &mut sqlx::PgConnection,
    workspace_id: &str,
    held: &Held,
) -> Result<(), StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT owner, epoch FROM workspace_leases WHERE workspace_id = $1 FOR KEY SHARE",
    )
    .bind(workspace_id)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some((owner, epoch)) if owner == held.owner && epoch == held.epoch => Ok(()),
        _ => Err(StoreError::NotOwner),
    }
}

/// This process as a lease owner: the machine's boot and PID namespace, its pid, and a random
/// part. A process that restarts after a crash can tell that an owner from the same boot and
/// namespace is dead (its pid is gone), and take its leases at once instead of waiting for them
/// to expire.
pub fn owner_id() -> String {
    // The boot and the PID namespace: two containers on one machine share the boot, not the pids.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .zip(std::fs::read_link("/proc/self/ns/pid").ok())
        .map(|(b, ns)| format!("{}/{}", b.trim(), ns.display()).replace(':', "="))
        .unwrap_or_default();
    format!(
        "{boot}:{}:{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether an owner is a process of this machine's current boot that no longer runs. Unknown
/// (another machine, another format, a pid that runs again): not dead.
fn dead_here(owner: &str, me: &str) -> bool {
    let mut theirs = owner.split(':');
    let mut mine = me.split(':');
    let (Some(boot), Some(pid), Some(_)) = (theirs.next(), theirs.next(), theirs.next()) else {
        return false;
    };
    if boot.is_empty() || mine.next() != Some(boot) || mine.next() == Some(pid) {
        return false;
    }
    pid.parse::<u32>()
        .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Takes the lease of a workspace whose owner died on this machine (a crash, then a restart): its
/// epoch, or None when its owner may be alive.
pub async fn take_from_dead(
    pool: &PgPool,
    workspace_id: &str,
    owner: &str,
    node_url: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT owner FROM workspace_leases WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(pool)
            .await?;
    let Some(holder) = holder.filter(|h| dead_here(h, owner)) else {
        return Ok(None);
    };
    tracing::info!(workspace = workspace_id, dead = %holder, "taking the lease of a process that died on this machine");
    let epoch: Option<i64> = sqlx::query_scalar(
        "UPDATE workspace_leases SET owner = $3, expires_at = now() + make_interval(secs => $4), \
         node_url = $5, epoch = epoch + 1 WHERE workspace_id = $1 AND owner = $2 RETURNING epoch",
    )
    .bind(workspace_id)
    .bind(&holder)
    .bind(owner)
    .bind(LEASE_TTL.as_secs_f64())
    .bind(node_url)
    .fetch_optional(pool)
    .await?;
    Ok(epoch)
}

/// Gives the lease up with work in flight (this node stops): it counts as expired at once, so
/// another node's sweep takes the workspace over and carries the work on.
pub async fn hand_over(pool: &PgPool, workspace_id: &str, owner: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workspace_leases SET expires_at = now() - interval '1 second' \
         WHERE workspace_id = $1 AND owner = $2",
    )
    .bind(workspace_id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_dead_only_when_it_ran_in_this_boot_and_its_pid_is_gone() {
        let me = owner_id();
        let boot = me.split(':').next().unwrap();
        assert!(!boot.is_empty());
        // A pid above the kernel's maximum never runs.
        assert!(dead_here(&format!("{boot}:4194305:x"), &me));
        // This very process, another machine, the old format: not dead.
        assert!(!dead_here(&format!("{boot}:{}:y", std::process::id()), &me));
        assert!(!dead_here("other-boot:4194305:x", &me));
        assert!(!dead_here("1234-abcdef", &me));
        // pid 1 runs.
        assert!(!dead_here(&format!("{boot}:1:x"), &me));
    }
}
