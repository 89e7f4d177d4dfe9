//! The room log's writer: one task per awake room that allocates seqs, persists entries (with the
//! room's state when it changed) and only then broadcasts them. The actor hands it jobs and never
//! waits; what it must know back (a prompt's seq, a failure) comes to it as a message.
//!
//! Writes are idempotent: after a failure whose outcome is unknown (a commit whose reply was lost),
//! the writer reads the head before writing again, so nothing is doubled, dropped or reordered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handle::Live;
use super::messages::{Internal, Then};
use crate::model::{RoomEntry, RoomEvent};
use crate::sandbox_agent::now_ms;
use crate::store::StoreError;
use crate::store::room_log;
use crate::store::room_state::RoomState;

/// How long a person's action may wait for its entry to be written before they are told the
/// database is unavailable.
pub(super) const URGENT_DEADLINE: Duration = Duration::from_millis(1500);
const MAX_BATCH: usize = 512;

pub(super) struct Job {
    pub events: Vec<RoomEvent>,
    pub state: Option<RoomState>,
    pub then: Option<Then>,
    /// A person waits on it: give up after [`URGENT_DEADLINE`] rather than retry until it works.
    pub urgent: bool,
}

/// The actor's side of the writer.
pub(super) struct LogWriter {
    tx: mpsc::UnboundedSender<Job>,
    head: Arc<AtomicI64>,
    failing: Arc<AtomicBool>,
}

impl LogWriter {
    pub(super) fn spawn(
        pool: PgPool,
        key: super::RoomKey,
        held: crate::store::leases::Held,
        head: i64,
        live: broadcast::Sender<Live>,
        done: mpsc::UnboundedSender<Internal>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let head_at = Arc::new(AtomicI64::new(head));
        let failing = Arc::new(AtomicBool::new(false));
        let task = Task {
            pool,
            workspace_id: key.workspace,
            thread_id: key.thread,
            held,
            fenced_out: false,
            next: head + 1,
            synced: true,
            uncertain: None,
            head: head_at.clone(),
            failing: failing.clone(),
            live,
            done,
            shutdown,
        };
        let join = tokio::spawn(task.run(rx));
        (
            Self {
                tx,
                head: head_at,
                failing,
            },
            join,
        )
    }

    pub(super) fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            tracing::error!(
                events = job.events.len(),
                "room-log writer is gone; entries dropped"
            );
        }
    }

    /// The newest seq that is in Postgres (and so has been, or is being, broadcast).
    pub(super) fn head(&self) -> i64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Whether the last write failed and none has succeeded since: people's actions are refused
    /// at once rather than queued behind it.
    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }
}

struct Task {
    pool: PgPool,
    workspace_id: String,
    thread_id: String,
    /// The lease this writer writes under.
    held: crate::store::leases::Held,
    /// Another process owns the workspace now: nothing more is written.
    fenced_out: bool,
    next: i64,
    /// False after a failed write: the head must be read before seqs are given out again.
    synced: bool,
    /// Entries of an urgent batch given up on: they may yet have been committed.
    uncertain: Option<Vec<RoomEntry>>,
    head: Arc<AtomicI64>,
    failing: Arc<AtomicBool>,
    live: broadcast::Sender<Live>,
    done: mpsc::UnboundedSender<Internal>,
    shutdown: CancellationToken,
}

enum Outcome {
    Written(i64),
    Failed,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut held: Option<Job> = None;
        let mut probes = crate::retry::delays();
        loop {
            let first = match held.take() {
                Some(j) => j,
                None if self.failing.load(Ordering::SeqCst) => {
                    // Nothing to write, and the last write failed: find out when Postgres is
                    // back, so that people's actions are not refused for ever.
                    tokio::select! {
                        job = rx.recv() => match job {
                            Some(j) => j,
                            None => break,
                        },
                        _ = tokio::time::sleep(crate::retry::next(&mut probes)) => {
                            if self.sync().await.is_ok() {
                                tracing::info!(workspace = %self.workspace_id, "the room log can be written again");
                                self.failing.store(false, Ordering::SeqCst);
                                probes = crate::retry::delays();
                            }
                            continue;
                        }
                    }
                }
                None => match rx.recv().await {
                    Some(j) => j,
                    None => break,
                },
            };
            let urgent = first.urgent;
            let mut count = first.events.len();
            let mut jobs = vec![first];
            while count < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) if j.urgent == urgent => {
                        count += j.events.len();
                        jobs.push(j);
                    }
                    Ok(j) => {
                        held = Some(j);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.write(jobs, urgent).await;
        }
    }

    async fn write(&mut self, jobs: Vec<Job>, urgent: bool) {
        let deadline = urgent.then(|| Instant::now() + URGENT_DEADLINE);
        let events: Vec<RoomEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
        let state = jobs.iter().rev().find_map(|j| j.state.clone());
        let outcome = self.persist(events, state.as_ref(), deadline).await;
        let mut offset = 0;
        for job in jobs {
            let n = job.events.len() as i64;
            if let Some(then) = job.then {
                let msg = match &outcome {
                    Outcome::Written(first) => Internal::Written {
                        first_seq: first + offset,
                        then,
                    },
                    Outcome::Failed => Internal::WriteFailed { then },
                };
                let _ = self.done.send(msg);
            }
            offset += n;
        }
    }

    /// Persists, then broadcasts; returns the first seq given out.
    async fn persist(
        &mut self,
        events: Vec<RoomEvent>,
        state: Option<&RoomState>,
        deadline: Option<Instant>,
    ) -> Outcome {
        if self.fenced_out {
            return Outcome::Failed;
        }
        let created_at = now_ms();
        let mut delays = crate::retry::delays();
        let mut wrap_all = false;
        loop {
            if !self.synced
                && let Err(e) = self.sync().await
            {
                if let Some(outcome) = self.wait_or_give_up(&e, deadline, &mut delays).await {
                    return outcome;
                }
                continue;
            }
            let entries: Vec<RoomEntry> = events
                .iter()
                .enumerate()
                .map(|(i, event)| RoomEntry {
                    seq: self.next + i as i64,
                    created_at,
                    event: event.clone(),
                })
                .collect();
            let written = room_log::append(
                &self.pool,
                &self.workspace_id,
                &self.thread_id,
                &entries,
                state,
                wrap_all,
                Some(&self.held),
            );
            match written.await {
                Err(StoreError::NotOwner) => {
                    tracing::error!(workspace = %self.workspace_id, "another process owns this workspace now; its actor here stops");
                    self.fenced_out = true;
                    let _ = self.done.send(Internal::LeaseLost);
                    return Outcome::Failed;
                }
                Ok(n) if n as usize == entries.len() => {
                    self.failing.store(false, Ordering::SeqCst);
                    let first = self.next;
                    self.publish(entries);
                    return Outcome::Written(first);
                }
                Ok(n) => {
                    // Seqs taken by someone else: only possible without the ownership lease.
                    tracing::error!(workspace = %self.workspace_id, written = n, "room-log seqs were taken; resyncing");
                    self.synced = false;
                }
                Err(e) if !e.is_transient() => {
                    if wrap_all {
                        tracing::error!(workspace = %self.workspace_id, error = %e, "room-log entries refused even wrapped; dropped");
                        return Outcome::Failed;
                    }
                    tracing::warn!(workspace = %self.workspace_id, error = %e, "room-log entries refused; storing them wrapped");
                    wrap_all = true;
                }
                Err(e) => {
                    // The commit may have happened and only its reply been lost: read the head
                    // before writing again.
                    self.synced = false;
                    if let Some(outcome) = self.wait_or_give_up(&e, deadline, &mut delays).await {
                        if deadline.is_some() {
                            self.uncertain = Some(entries);
                        }
                        return outcome;
                    }
                    // A retry after a lost reply: the head tells whether the batch is in.
                    if let Some(last) = entries.last().map(|e| e.seq)
                        && self.sync().await.is_ok()
                        && self.next > last
                    {
                        tracing::warn!(workspace = %self.workspace_id, "room-log write had committed");
                        self.failing.store(false, Ordering::SeqCst);
                        let first = entries.first().map_or(self.next, |e| e.seq);
                        self.publish_only(entries);
                        return Outcome::Written(first);
                    }
                }
            }
        }
    }

    /// Reads the head and gives out seqs after it. Entries of a batch given up on that turn out to
    /// be in Postgres are broadcast now, so that viewers see what is stored.
    async fn sync(&mut self) -> Result<(), StoreError> {
        let head = room_log::head(&self.pool, &self.thread_id).await?;
        if let Some(entries) = self.uncertain.take() {
            let committed: Vec<RoomEntry> = entries.into_iter().filter(|e| e.seq <= head).collect();
            if !committed.is_empty() {
                tracing::warn!(workspace = %self.workspace_id, entries = committed.len(), "a write reported as failed had committed");
                self.publish_only(committed);
            }
        }
        self.next = head + 1;
        self.head.store(head, Ordering::SeqCst);
        self.synced = true;
        Ok(())
    }

    /// Waits before the next try; Some(outcome) when it must not try again (a person's deadline
    /// has passed, or the server is shutting down).
    async fn wait_or_give_up(
        &mut self,
        error: &StoreError,
        deadline: Option<Instant>,
        delays: &mut (impl Iterator<Item = Duration> + Send),
    ) -> Option<Outcome> {
        if !self.failing.swap(true, Ordering::SeqCst) {
            let _ = self.live.send(Live::LogDown);
        }
        tracing::error!(workspace = %self.workspace_id, %error, "could not write the room log");
        let delay = crate::retry::next(delays);
        let wake = match deadline {
            Some(d) if Instant::now() + delay >= d => {
                return Some(Outcome::Failed);
            }
            _ => Instant::now() + delay,
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Some(Outcome::Failed),
            _ = tokio::time::sleep_until(wake) => None,
        }
    }

    fn publish(&mut self, entries: Vec<RoomEntry>) {
        if let Some(last) = entries.last() {
            self.next = last.seq + 1;
        }
        self.publish_only(entries);
    }

    fn publish_only(&mut self, entries: Vec<RoomEntry>) {
        if let Some(last) = entries.last() {
            self.head.fetch_max(last.seq, Ordering::SeqCst);
        }
        for entry in entries {
            let _ = self
                .live
                .send(Live::Entry(Arc::new(super::handle::LiveEntry::new(entry))));
        }
    }
}
