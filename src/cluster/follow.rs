//! A room's stream on a node that does not own its workspace: the node follows the room log.
//! Every committed batch is announced with `NOTIFY huddle_room_log, '<thread> <last seq>'`
//! ([`room_log::CHANNEL`]); the node reads what it has not broadcast yet from the log, in order,
//! and broadcasts it to its subscribers of that room as the owner does to its own. A notification
//! that comes twice reads nothing; one missed (the listening connection dropped) is made up for at
//! the next one, and at once after the listener reconnects. Typing and who is online, which are
//! not kept, come on [`LIVE_CHANNEL`] from the owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::model::Member;
use crate::room::{Live, LiveEntry};
use crate::store::{StoreError, room_log};

/// Where owners announce what is not kept: typing, and who is online.
pub const LIVE_CHANNEL: &str = "huddle_room_live";
/// Entries read from the log at once.
const PAGE: i64 = 500;
/// Broadcast capacity per followed room (a subscriber that lags reads the gap from Postgres).
const LIVE_BUFFER: usize = 1024;

/// What an owner announces on [`LIVE_CHANNEL`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveNote {
    pub thread: String,
    #[serde(flatten)]
    pub what: LiveWhat,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LiveWhat {
    Typing(Member),
    Online(Vec<Member>),
}

/// The rooms this node follows. Cheap to clone; listens once the first is followed.
#[derive(Clone)]
pub struct Followers(Arc<Inner>);

struct Inner {
    pool: PgPool,
    shutdown: CancellationToken,
    rooms: Mutex<HashMap<String, Arc<Followed>>>,
    listening: tokio::sync::OnceCell<()>,
}

struct Followed {
    live: broadcast::Sender<Live>,
    /// The last seq broadcast (None until the head was read); held while reading, so that
    /// entries go out once each and in order.
    last: tokio::sync::Mutex<Option<i64>>,
    /// The newest seq announced before the head was read.
    pending: std::sync::atomic::AtomicI64,
    subscribers: std::sync::atomic::AtomicUsize,
    online: Mutex<Arc<Vec<Member>>>,
}

/// A subscriber of a followed room; leaving when dropped.
pub struct Following {
    pub head: i64,
    pub live: broadcast::Receiver<Live>,
    pub online: Arc<Vec<Member>>,
    /// Held while subscribed.
    pub guard: Guard,
}

/// Leaves the followed room when dropped.
pub struct Guard {
    followers: Followers,
    thread: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut rooms = self.followers.0.rooms.lock().expect("followers lock");
        if let Some(room) = rooms.get(&self.thread)
            && room
                .subscribers
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
                == 1
        {
            rooms.remove(&self.thread);
        }
    }
}

impl Followers {
    pub fn new(pool: PgPool, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            pool,
            shutdown,
            rooms: Mutex::new(HashMap::new()),
            listening: tokio::sync::OnceCell::new(),
        }))
    }

    /// Follows a thread's room: its head now, and everything after it as it is committed.
    pub async fn follow(&self, thread: &str) -> Result<Following, StoreError> {
        self.0.listening.get_or_try_init(|| self.listen()).await?;
        let room = {
            let mut rooms = self.0.rooms.lock().expect("followers lock");
            let room = rooms
                .entry(thread.to_string())
                .or_insert_with(|| {
                    Arc::new(Followed {
                        live: broadcast::channel(LIVE_BUFFER).0,
                        last: tokio::sync::Mutex::new(None),
                        pending: std::sync::atomic::AtomicI64::new(0),
                        subscribers: Default::default(),
                        online: Mutex::new(Arc::new(Vec::new())),
                    })
                })
                .clone();
            room.subscribers
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            room
        };
        let guard = Guard {
            followers: self.clone(),
            thread: thread.to_string(),
        };
        let live = room.live.subscribe();
        let head = {
            let mut last = room.last.lock().await;
            match *last {
                Some(seq) => seq,
                None => {
                    let head = room_log::head(&self.0.pool, thread).await?;
                    *last = Some(head);
                    head
                }
            }
        };
        let announced = room.pending.load(std::sync::atomic::Ordering::SeqCst);
        if announced > head {
            self.catch_up(thread.to_string(), announced);
        }
        let online = room.online.lock().expect("online lock").clone();
        Ok(Following {
            head,
            live,
            online,
            guard,
        })
    }

    /// Listens on the node's own connection (it reconnects by itself).
    async fn listen(&self) -> Result<(), StoreError> {
        let mut listener = PgListener::connect_with(&self.0.pool).await?;
        listener
            .listen_all([room_log::CHANNEL, LIVE_CHANNEL])
            .await?;
        let followers = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = followers.0.shutdown.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) if n.channel() == room_log::CHANNEL => {
                        if let Some((thread, seq)) = n.payload().split_once(' ')
                            && let Ok(seq) = seq.parse::<i64>()
                        {
                            followers.catch_up(thread.to_string(), seq);
                        }
                    }
                    Ok(Some(n)) => followers.live_note(n.payload()),
                    // The connection dropped and is back: what was announced meanwhile is lost,
                    // so every followed room reads what it lacks.
                    Ok(None) => {
                        tracing::warn!("the room-log listener reconnected; catching up");
                        let threads: Vec<String> = followers
                            .0
                            .rooms
                            .lock()
                            .expect("followers lock")
                            .keys()
                            .cloned()
                            .collect();
                        for thread in threads {
                            followers.catch_up(thread, i64::MAX);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the room-log listener failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(())
    }

    fn room(&self, thread: &str) -> Option<Arc<Followed>> {
        self.0
            .rooms
            .lock()
            .expect("followers lock")
            .get(thread)
            .cloned()
    }

    /// Reads and broadcasts a followed room's entries up to `upto`, in the background.
    fn catch_up(&self, thread: String, upto: i64) {
        let Some(room) = self.room(&thread) else {
            return;
        };
        let pool = self.0.pool.clone();
        tokio::spawn(async move {
            let mut last = room.last.lock().await;
            let Some(mut from) = *last else {
                room.pending
                    .fetch_max(upto, std::sync::atomic::Ordering::SeqCst);
                return;
            };
            while from < upto {
                let page = match room_log::list(&pool, &thread, from, upto, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        // The next notification (or the listener's reconnect) reads it again.
                        tracing::warn!(thread = %thread, error = %e, "cannot read a followed room's log");
                        break;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for entry in page {
                    from = entry.seq;
                    let _ = room.live.send(Live::Entry(Arc::new(LiveEntry::new(entry))));
                }
            }
            *last = Some(from);
        });
    }

    fn live_note(&self, payload: &str) {
        let Ok(note) = serde_json::from_str::<LiveNote>(payload) else {
            return;
        };
        let Some(room) = self.room(&note.thread) else {
            return;
        };
        let live = match note.what {
            LiveWhat::Typing(member) => Live::Typing(member),
            LiveWhat::Online(online) => {
                let online = Arc::new(online);
                *room.online.lock().expect("online lock") = online.clone();
                Live::Online(online)
            }
        };
        let _ = room.live.send(live);
    }
}

/// Announces typing or who is online to the nodes that follow the room (in the background: the
/// actor never waits on the database). A list too long for a notification is cut to what fits.
pub fn announce(pool: &PgPool, thread: &str, what: LiveWhat) {
    let mut note = LiveNote {
        thread: thread.to_string(),
        what,
    };
    let mut payload = serde_json::to_string(&note).unwrap_or_default();
    // Postgres takes payloads under 8,000 bytes.
    while payload.len() >= 7_900 {
        match &mut note.what {
            LiveWhat::Online(list) if !list.is_empty() => {
                list.truncate(list.len() * 3 / 4);
            }
            _ => return,
        }
        payload = serde_json::to_string(&note).unwrap_or_default();
    }
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LIVE_CHANNEL)
            .bind(payload)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "could not announce typing or presence");
        }
    });
}
