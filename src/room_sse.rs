//! `GET /api/workspace/{id}/events`: the room log as server-sent events. `Last-Event-ID` (or
//! `?after=`) replays exactly the missed entries from Postgres, then the stream goes on live; a
//! subscriber that falls behind the live channel is caught up from Postgres, never skipped. An id
//! beyond the head (a log that was reset) gets a `reset` event and the whole log again. Who is in
//! the room comes as `online` events, and typing as `typing`; neither is kept.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, Kick, Need};
use crate::error::ApiError;
use crate::model::{Member, RoomEntry};
use crate::room::{Live, Subscription};
use crate::state::AppState;
use crate::store::room_log;

const PAGE: i64 = 500;

/// How many pages of the log streams read at once, at most: half the pool. Ten thousand streams
/// that fall behind together (a node short of CPU) would otherwise take every connection, and the
/// rooms' own writes would wait behind them until people were told the room is unavailable.
const CATCH_UP_SLOTS: usize = crate::store::POOL_CONNECTIONS as usize / 2;

/// The room log as streams read it to catch up: a page at a time, [`CATCH_UP_SLOTS`] at once.
#[derive(Clone)]
pub struct CatchUp {
    pool: sqlx::PgPool,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl CatchUp {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(CATCH_UP_SLOTS)),
        }
    }

    async fn page(
        &self,
        thread: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<RoomEntry>, crate::store::StoreError> {
        // Never closed: an error cannot happen, and would only skip the wait.
        let _slot = self.slots.acquire().await;
        room_log::list(&self.pool, thread, after, upto, PAGE).await
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    /// The thread (absent: the workspace's first).
    #[serde(rename = "threadId")]
    thread_id: Option<String>,
}

pub async fn room_events(
    State(state): State<AppState>,
    ConnectInfo(crate::listener::Peer(peer)): ConnectInfo<crate::listener::Peer>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    // A Last-Event-ID that is not text is malformed too (not absent: that would replay all).
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return ApiError::bad_request("Last-Event-ID must be a room-log sequence number.")
                .into_response();
        }
        None => None,
    };
    let after = match (last_event_id, q.after) {
        (Some(v), _) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return ApiError::bad_request("Last-Event-ID must be a room-log sequence number.")
                    .into_response();
            }
        },
        (None, Some(n)) if n >= 0 => n,
        (None, Some(_)) => {
            return ApiError::bad_request("after must not be negative.").into_response();
        }
        (None, None) => 0,
    };
    // Only people in the workspace watch it; they are present with their role.
    let (member, viewer) = match state.auth().require(&caller, &id, Need::View).await {
        Ok(grant) => (grant.member, grant.role == crate::model::Role::Viewer),
        Err(e) => return e.into_response(),
    };
    let key = match state.room_key(&id, q.thread_id.as_deref()).await {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    // Viewers get no path of the working directory: it is made relative in what they are sent.
    let hidden_dir = match viewer {
        true => match state.registry().info(&key).await {
            Ok(info) => Some(info.working_dir),
            Err(e) => return ApiError::from(e).into_response(),
        },
        false => None,
    };
    // Held as long as the stream: counted against its address and its person.
    let guards = match state
        .open_stream(
            state.client_ip(peer.ip(), &headers),
            Some(member.user_id.as_str()),
        )
        .await
    {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let kicks = state.auth().kicks();
    let person = member.user_id.clone();
    let pulses = state.registry().thread_pulses(&key.workspace);
    let sub = match state.registry().subscribe(&key, Some(member)).await {
        Ok(sub) => sub,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let log = state.catch_up().clone();
    let ends = Ends {
        shutdown: state.shutdown().clone(),
        kicks,
        person,
        hidden_dir,
        pulses,
    };
    // Polled by the connection itself: an idle client costs no task and no channel of its own.
    Sse::new(feed(log, key, after, sub, ends, guards))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What ends a stream besides its client: shutdown, or a change to its person's access.
struct Ends {
    shutdown: CancellationToken,
    kicks: broadcast::Receiver<Kick>,
    person: String,
    /// Viewers are not shown paths on the machine: the working directory they may not see.
    hidden_dir: Option<String>,
    /// Changes to the workspace's threads, for its thread list.
    pulses: broadcast::Receiver<crate::model::ThreadPulse>,
}

/// What woke a stream.
enum Wake {
    /// Shutdown, or the room's actor slept.
    Ended,
    Kick(Kick),
    Pulse(crate::model::ThreadPulse),
    Live(Result<Live, BroadcastStreamRecvError>),
}

fn entry_event(entry: &RoomEntry, hidden_dir: Option<&str>) -> Event {
    if let Some(dir) = hidden_dir
        && let Some(hidden) = entry.without_paths(dir)
    {
        return entry_event(&hidden, None);
    }
    Event::default()
        .id(entry.seq.to_string())
        .event(entry.event.kind())
        .json_data(entry)
        .unwrap_or_else(|_| Event::default().comment("unserialisable entry"))
}

fn online_event(online: &[Member]) -> Option<Event> {
    Event::default().event("online").json_data(online).ok()
}

/// The entries after `from` up to `upto`, from Postgres, page by page; an error ends it (the
/// client reconnects with Last-Event-ID and loses nothing).
fn replay(
    log: &CatchUp,
    id: &str,
    mut from: i64,
    upto: i64,
) -> impl futures::Stream<Item = Result<RoomEntry, ()>> {
    async_stream::stream! {
        while from < upto {
            let page = match log.page(id, from, upto).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(thread = %id, error = %e, "room replay failed; ending the stream");
                    yield Err(());
                    return;
                }
            };
            if page.is_empty() {
                break;
            }
            for entry in page {
                from = entry.seq;
                yield Ok(entry);
            }
        }
    }
}

/// The stream of one client: what it missed, then the room live. Counted against its address
/// and person (`guards`) while it lives.
fn feed<G: Send + 'static>(
    log: CatchUp,
    key: crate::room::RoomKey,
    mut after: i64,
    mut sub: Subscription,
    ends: Ends,
    guards: G,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        let _counted = guards;
        let head = sub.head;
        let Some((online, live)) = sub.take() else { return };
        if let Some(ev) = online_event(&online) {
            yield Ok(ev);
        }
        drop(online);
        if after > head {
            // The client knows entries this log does not have: start it over.
            yield Ok(Event::default().event("reset").data(head.to_string()));
            after = 0;
        }
        let id = key.thread.clone();
        let mut last = after;
        // Boxed: a query's state is big, and held only while catching up, not while idle.
        for await entry in Box::pin(replay(&log, &id, after, head)) {
            let Ok(entry) = entry else { return };
            last = entry.seq;
            yield Ok(entry_event(&entry, ends.hidden_dir.as_deref()));
        }
        // Each source stays registered while it waits, and only the one that woke is polled:
        // a new entry costs each of a thousand streams one look at the room's channel, not a
        // turn of every lock they wait on.
        let mut wakes = futures::stream::select_all([
            futures::stream::once(ends.shutdown.cancelled_owned())
                .map(|()| Wake::Ended)
                .boxed(),
            BroadcastStream::new(ends.kicks)
                .filter_map(|k| std::future::ready(k.ok().map(Wake::Kick)))
                .boxed(),
            BroadcastStream::new(ends.pulses)
                // Missed some: an empty one makes the list fetch itself again.
                .map(|p| {
                    Wake::Pulse(p.unwrap_or_else(|_| crate::model::ThreadPulse {
                        thread_id: String::new(),
                        status: None,
                        started_by: None,
                    }))
                })
                .boxed(),
            // The actor slept when its channel closes; the client reconnects.
            live.map(Wake::Live)
                .chain(futures::stream::once(std::future::ready(Wake::Ended)))
                .boxed(),
        ]);
        while let Some(wake) = wakes.next().await {
            let event = match wake {
                Wake::Ended => return,
                Wake::Kick(k) => {
                    if k.workspace_id == key.workspace && k.person_id == ends.person {
                        // The page reloads and shows what its person may do now.
                        yield Ok(Event::default().event("access").data("changed"));
                        return;
                    }
                    continue;
                }
                Wake::Pulse(pulse) => match Event::default().event("thread").json_data(&pulse) {
                    Ok(ev) => ev,
                    Err(_) => continue,
                },
                Wake::Live(Ok(Live::Entry(live))) => {
                    let entry = &live.entry;
                    if entry.seq <= last {
                        continue;
                    }
                    if entry.seq > last + 1 {
                        // Missed some (we lagged): fill in from Postgres, where they already are.
                        for await missed in Box::pin(replay(&log, &id, last, entry.seq - 1)) {
                            let Ok(missed) = missed else { return };
                            yield Ok(entry_event(&missed, ends.hidden_dir.as_deref()));
                        }
                    }
                    last = entry.seq;
                    crate::cluster::metrics::FAN_OUT.record(live.born.elapsed());
                    match ends.hidden_dir.as_deref() {
                        Some(dir) => entry_event(entry, Some(dir)),
                        // Members get what everyone gets: serialised once for all of them.
                        None => Event::default()
                            .id(entry.seq.to_string())
                            .event(entry.event.kind())
                            .data(live.json()),
                    }
                }
                Wake::Live(Ok(Live::Typing(member))) => {
                    match Event::default().event("typing").json_data(&member) {
                        Ok(ev) => ev,
                        Err(_) => continue,
                    }
                }
                Wake::Live(Ok(Live::Online(online))) => match online_event(&online) {
                    Some(ev) => ev,
                    None => continue,
                },
                // The client reconnects, and resumes from its last entry once the log is back.
                Wake::Live(Ok(Live::LogDown)) => return,
                Wake::Live(Err(BroadcastStreamRecvError::Lagged(skipped))) => {
                    tracing::debug!(thread = %id, skipped, "slow subscriber; resyncing from Postgres");
                    continue;
                }
            };
            yield Ok(event);
        }
    }
}
