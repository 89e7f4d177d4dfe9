//! What is counted per address or person across every node: open live streams (each address and
//! each person may hold so many) and open Huddle tabs (a person with one anywhere gets no push).
//! Each node counts its own in memory and writes them to Postgres (`node_counts`) soon after
//! they change; when it decides, it adds what the other live nodes wrote. Two nodes deciding in
//! the same instant may both admit one stream over the limit; no more than that.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    /// Live streams of an address.
    StreamsOfIp,
    /// Live streams of a person.
    StreamsOfPerson,
    /// Open Huddle tabs of a person.
    TabsOfPerson,
}

impl Counted {
    fn as_str(self) -> &'static str {
        match self {
            Counted::StreamsOfIp => "streams_ip",
            Counted::StreamsOfPerson => "streams_person",
            Counted::TabsOfPerson => "tabs_person",
        }
    }
}

/// How soon a change is written (changes within it are written together).
const FLUSH: Duration = Duration::from_millis(100);
/// How often a node says it is alive (and looks for others); one unseen for `UNSEEN_SECS` no
/// longer counts.
const ALIVE: Duration = Duration::from_secs(1);
const UNSEEN_SECS: f64 = 10.0;
/// Every how many alive ticks the dead nodes' rows and full rate buckets are swept away (nothing
/// reads them, so they need not go at once).
const SWEEP_EVERY: u32 = 30;
/// How long a decision waits for the other nodes' counts before it goes by its own.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

type Key = (Counted, String);

#[derive(Clone)]
pub struct NodeCounts(Arc<Inner>);

struct Inner {
    pool: PgPool,
    /// For saying this node is alive, on connections requests cannot take.
    beats: PgPool,
    node: String,
    /// Whether another node was alive when this one last looked.
    others: std::sync::atomic::AtomicBool,
    local: Mutex<Counts>,
    changed: Notify,
}

#[derive(Default)]
struct Counts {
    n: HashMap<Key, usize>,
    dirty: HashSet<Key>,
}

/// Counts one stream or tab until dropped.
pub struct Counting {
    counts: NodeCounts,
    key: Key,
}

impl NodeCounts {
    /// Counts for this node (`node`, unique per process) until `stop`, when its counts go.
    pub fn start(pool: PgPool, beats: PgPool, node: String, stop: CancellationToken) -> Self {
        let counts = Self(Arc::new(Inner {
            pool,
            beats,
            node,
            others: std::sync::atomic::AtomicBool::new(false),
            local: Mutex::default(),
            changed: Notify::new(),
        }));
        tokio::spawn(counts.clone().run(stop));
        counts
    }

    /// Counts one more of `key` unless this node and the others together hold `max` already.
    pub async fn open(&self, what: Counted, key: &str, max: usize) -> Option<Counting> {
        let key = (what, key.to_string());
        if self.here(&key) >= max {
            return None;
        }
        let elsewhere = self.elsewhere(&key).await;
        let mut local = self.0.local.lock().expect("counts lock");
        let n = local.n.entry(key.clone()).or_insert(0);
        if *n + elsewhere >= max {
            if *n == 0 {
                local.n.remove(&key);
            }
            return None;
        }
        *n += 1;
        local.dirty.insert(key.clone());
        drop(local);
        self.0.changed.notify_one();
        Some(Counting {
            counts: self.clone(),
            key,
        })
    }

    /// Whether another node was alive when this one last looked (every few seconds).
    pub fn others_alive(&self) -> bool {
        self.0.others.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of `key` are open, here and on the other live nodes.
    pub async fn total(&self, what: Counted, key: &str) -> usize {
        let key = (what, key.to_string());
        self.here(&key) + self.elsewhere(&key).await
    }

    fn here(&self, key: &Key) -> usize {
        let local = self.0.local.lock().expect("counts lock");
        local.n.get(key).copied().unwrap_or(0)
    }

    /// What the other live nodes wrote; 0 when Postgres does not answer in time (each node's own
    /// limit still holds then).
    async fn elsewhere(&self, key: &Key) -> usize {
        let read = sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(sum(c.n), 0)::bigint FROM node_counts c JOIN nodes d ON d.id = c.node \
             WHERE c.kind = $1 AND c.key = $2 AND c.node <> $3 \
             AND d.seen_at > now() - make_interval(secs => $4)",
        )
        .bind(key.0.as_str())
        .bind(&key.1)
        .bind(&self.0.node)
        .bind(UNSEEN_SECS)
        .fetch_one(&self.0.pool);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(n)) => n.max(0) as usize,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the other nodes' counts");
                0
            }
            Err(_) => {
                tracing::warn!("the other nodes' counts did not come in time");
                0
            }
        }
    }

    fn close(&self, key: &Key) {
        let mut local = self.0.local.lock().expect("counts lock");
        if let Some(n) = local.n.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                local.n.remove(key);
            }
        }
        local.dirty.insert(key.clone());
        drop(local);
        self.0.changed.notify_one();
    }

    /// Says this node is alive and writes what changed, until `stop`; then takes its counts away.
    async fn run(self, stop: CancellationToken) {
        let mut alive = tokio::time::interval(ALIVE);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = alive.tick() => {
                    ticks = ticks.wrapping_add(1);
                    if let Err(e) = self.say_alive(ticks % SWEEP_EVERY == 1).await {
                        tracing::warn!(error = %e, "cannot say this node is alive");
                    }
                }
                _ = self.0.changed.notified() => {
                    tokio::time::sleep(FLUSH).await;
                    if let Err(e) = self.flush().await {
                        tracing::warn!(error = %e, "cannot write this node's counts; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        self.0.changed.notify_one();
                    }
                }
            }
        }
        let gone = async {
            sqlx::query("DELETE FROM node_counts WHERE node = $1")
                .bind(&self.0.node)
                .execute(&self.0.pool)
                .await?;
            sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(&self.0.node)
                .execute(&self.0.pool)
                .await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), gone).await;
    }

    async fn say_alive(&self, sweep: bool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO nodes (id, seen_at) VALUES ($1, now()) \
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        )
        .bind(&self.0.node)
        .execute(&self.0.beats)
        .await?;
        let others: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE id <> $1 \
             AND seen_at > now() - make_interval(secs => $2))",
        )
        .bind(&self.0.node)
        .bind(UNSEEN_SECS)
        .fetch_one(&self.0.beats)
        .await?;
        self.0
            .others
            .store(others, std::sync::atomic::Ordering::Relaxed);
        if !sweep {
            return Ok(());
        }
        // Nodes that died long ago, and what they counted.
        sqlx::query(
            "DELETE FROM node_counts c WHERE NOT EXISTS (SELECT 1 FROM nodes d WHERE d.id = c.node \
             AND d.seen_at > now() - interval '1 minute')",
        )
        .execute(&self.0.pool)
        .await?;
        sqlx::query("DELETE FROM nodes WHERE seen_at < now() - interval '1 minute'")
            .execute(&self.0.pool)
            .await?;
        crate::store::rates::forget_full(&self.0.pool)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), sqlx::Error> {
        let (taken, ns): (Vec<Key>, Vec<i32>) = {
            let mut local = self.0.local.lock().expect("counts lock");
            let taken: Vec<Key> = std::mem::take(&mut local.dirty).into_iter().collect();
            let ns = taken
                .iter()
                .map(|k| local.n.get(k).copied().unwrap_or(0).min(i32::MAX as usize) as i32)
                .collect();
            (taken, ns)
        };
        let kinds: Vec<&str> = taken.iter().map(|k| k.0.as_str()).collect();
        let keys: Vec<&str> = taken.iter().map(|k| k.1.as_str()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let write = async {
            let mut tx = self.0.pool.begin().await?;
            sqlx::query(
                "INSERT INTO node_counts (node, kind, key, n) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int[]) \
                 ON CONFLICT (node, kind, key) DO UPDATE SET n = EXCLUDED.n",
            )
            .bind(&self.0.node)
            .bind(&kinds)
            .bind(&keys)
            .bind(&ns)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM node_counts WHERE node = $1 AND n = 0")
                .bind(&self.0.node)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        if let Err(e) = write.await {
            // Written again with the next flush.
            let mut local = self.0.local.lock().expect("counts lock");
            local.dirty.extend(taken.iter().cloned());
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.counts.close(&self.key);
    }
}
