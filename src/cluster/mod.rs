//! Several Huddle nodes on one Postgres, behind a load balancer. Each workspace is owned by one
//! node at a time (its lease, with a fencing epoch, `store::leases`); any node serves any room:
//!
//! - `forward`: an action that reaches a node not owning the workspace is carried out by the
//!   owner, over an internal call authenticated with a secret every node reads from Postgres.
//! - `follow`: a room's stream on a node not owning it follows the room log through Postgres
//!   `LISTEN/NOTIFY` (ids only) and reads the entries from the log.
//!
//! A node that dies stops renewing its leases; every node sweeps for expired ones and one takes
//! each over (`room::Registry::spawn_takeover`).

pub mod counts;
pub mod follow;
pub mod forward;
pub mod metrics;
