//! The live room: the folded timeline and everything the page shows of it, kept current entry by
//! entry from the stream; older history paged in; who is here and typing; what this person has
//! read. One struct of signals (cheap to copy into closures), so the components only render it.

use std::collections::{HashMap, HashSet};

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::RoomCtx;
use super::rows::RowSlot;
use super::threads::ThreadsState;
use crate::api::{history, mark_read, render_markdown};
use crate::browser;
use crate::model::{Member, RoomEntry, RoomEvent};
use crate::timeline::{self, Fold, Item, RunningTurn, SessionFacts, Waiting};

#[derive(Clone, Copy)]
pub struct LiveRoom {
    fold: StoredValue<Fold>,
    /// The newest seq applied: a resumed stream starts after it, and never doubles an entry.
    pub(crate) head: StoredValue<i64>,
    /// The rows since the page's first, each with its own signal: a streamed chunk touches only
    /// the rows it changes, so a long room costs no more per chunk than a short one, and an open
    /// "Thinking" or raw row stays open.
    pub(crate) rows: RwSignal<Vec<RowSlot>>,
    /// Older history, paged in (newest last) as people scroll up; it no longer changes.
    pub(crate) older_rows: RwSignal<Vec<Item>>,
    /// How many rows come before the first shown (0: all are here).
    pub(crate) older: RwSignal<usize>,
    pub(crate) loading_older: RwSignal<bool>,
    pub(crate) running: RwSignal<Option<RunningTurn>>,
    pub(crate) queue: RwSignal<Vec<Waiting>>,
    pub(crate) facts: RwSignal<SessionFacts>,
    /// The row of the permission request the agent waits on, if any.
    pub(crate) asking: RwSignal<Option<String>>,
    /// The workspace's name: as the page says, then as the owner renames it, live.
    pub(crate) name: RwSignal<String>,
    /// Finished markdown, rendered (and sanitised) on the server once per row, by key.
    rendered: RwSignal<HashMap<String, String>>,
    asked: StoredValue<HashSet<String>>,
    /// Who is in the room: the server's list, kept current by `online` events.
    pub(crate) online: RwSignal<Vec<Member>>,
    pub(crate) connected: RwSignal<bool>,
    pub(crate) ever_connected: RwSignal<bool>,
    /// Who is typing, until when.
    pub(crate) typists: RwSignal<Vec<(Member, f64)>>,
    /// Noteworthy entries while the tab was hidden (its title says how many).
    pub(crate) unread: RwSignal<u32>,
    /// What a screen reader hears: new messages and turn ends, not every streamed chunk.
    pub(crate) announce: RwSignal<String>,
    /// The browser's clock, ticking once a second (0 until hydrated).
    pub(crate) now: RwSignal<f64>,
    /// How far this person has read the thread, as the server last took it.
    read_at: StoredValue<i64>,
    marking: StoredValue<bool>,
}

impl LiveRoom {
    pub(crate) fn new(
        initial: Fold,
        head: i64,
        older: usize,
        name: String,
        online: Vec<Member>,
        rendered: RwSignal<HashMap<String, String>>,
    ) -> Self {
        Self {
            rows: RwSignal::new(initial.items().iter().cloned().map(RowSlot::new).collect()),
            running: RwSignal::new(initial.running().cloned()),
            queue: RwSignal::new(initial.queue().to_vec()),
            facts: RwSignal::new(initial.session().clone()),
            asking: RwSignal::new(initial.open_question().map(str::to_string)),
            fold: StoredValue::new(initial),
            head: StoredValue::new(head),
            older_rows: RwSignal::new(Vec::new()),
            older: RwSignal::new(older),
            loading_older: RwSignal::new(false),
            name: RwSignal::new(name),
            rendered,
            asked: StoredValue::new(HashSet::new()),
            online: RwSignal::new(online),
            connected: RwSignal::new(false),
            ever_connected: RwSignal::new(false),
            typists: RwSignal::new(Vec::new()),
            unread: RwSignal::new(0),
            announce: RwSignal::new(String::new()),
            now: RwSignal::new(0.0),
            read_at: StoredValue::new(0),
            marking: StoredValue::new(false),
        }
    }

    /// Applies one entry: only the rows it changes are touched.
    pub(crate) fn apply(self, entry: &RoomEntry) {
        let changed = self
            .fold
            .try_update_value(|f| f.apply(entry))
            .unwrap_or_default();
        let len = self.rows.with_untracked(|r| r.len());
        let mut added = Vec::new();
        self.fold.with_value(|f| {
            for i in changed {
                let item = f.items()[i].clone();
                self.render_finished(&item);
                if i < len {
                    self.rows.with_untracked(|r| r[i].item.set(item));
                } else {
                    added.push(RowSlot::new(item));
                }
            }
            // The dock changes when the turn or the queue does, not on every streamed chunk (so
            // its buttons stay put under the pointer).
            if self.running.with_untracked(|r| r.as_ref() != f.running()) {
                self.running.set(f.running().cloned());
            }
            if self.queue.with_untracked(|q| q.as_slice() != f.queue()) {
                self.queue.set(f.queue().to_vec());
            }
            if self.facts.with_untracked(|s| s != f.session()) {
                self.facts.set(f.session().clone());
            }
            if self
                .asking
                .with_untracked(|a| a.as_deref() != f.open_question())
            {
                self.asking.set(f.open_question().map(str::to_string));
            }
            if let Some(n) = f.name()
                && self.name.with_untracked(|r| r != n)
            {
                self.name.set(n.to_string());
            }
        });
        if !added.is_empty() {
            self.rows.update(|r| r.extend(added));
        }
    }

    /// The server sends the whole log again: start from nothing rather than keep what it no
    /// longer has.
    pub(crate) fn reset(self) {
        self.fold.set_value(Fold::default());
        self.head.set_value(0);
        self.rows.set(Vec::new());
        self.running.set(None);
        self.queue.set(Vec::new());
        self.facts.set(Default::default());
    }

    /// Asks the server to render a finished row's markdown, once.
    fn render_finished(self, item: &Item) {
        let rendered = self.rendered;
        for (key, text) in timeline::finished_markdown(item) {
            if rendered.with_untracked(|r| r.contains_key(&key))
                || self.asked.with_value(|a| a.contains(&key))
            {
                continue;
            }
            self.asked.update_value(|a| {
                a.insert(key.clone());
            });
            spawn_local(async move {
                if let Ok(html) = render_markdown(text).await {
                    rendered.update(|r| {
                        r.insert(key, html);
                    });
                }
            });
        }
    }

    /// Pages in the rows before the first shown; what was on screen stays where it was.
    pub(crate) fn load_older(self, ctx: RoomCtx) {
        let before = self.older.get_untracked();
        if before == 0 || self.loading_older.get_untracked() {
            return;
        }
        self.loading_older.set(true);
        let (ws, thread) = (ctx.ws.get_value(), Some(ctx.thread.get_value()));
        spawn_local(async move {
            match history(ws, thread, before).await {
                Ok(page) => {
                    let height = browser::scroll_height();
                    self.rendered.update(|r| r.extend(page.rendered));
                    self.older_rows.update(|rows| {
                        let mut items = page.items;
                        items.append(rows);
                        *rows = items;
                    });
                    self.older.set(page.start);
                    request_animation_frame(move || {
                        browser::scroll_by(browser::scroll_height() - height)
                    });
                }
                Err(e) => ctx.error.set(Some(e.message)),
            }
            self.loading_older.set(false);
        });
    }

    /// Tells the server how far this person has read (the first time at once, then at most once
    /// a second), while the tab is in front.
    pub(crate) fn mark_read(self, ctx: RoomCtx) {
        if browser::page_hidden()
            || self.marking.get_value()
            || self.head.get_value() <= self.read_at.get_value()
        {
            return;
        }
        self.marking.set_value(true);
        let delay = if self.read_at.get_value() == 0 {
            0
        } else {
            1000
        };
        set_timeout(
            move || {
                let (Some(seq), Some(ws), Some(thread)) = (
                    self.head.try_get_value(),
                    ctx.ws.try_get_value(),
                    ctx.thread.try_get_value(),
                ) else {
                    return;
                };
                spawn_local(async move {
                    if mark_read(ws, Some(thread), seq).await.is_ok() {
                        self.read_at.try_set_value(seq);
                    }
                    self.marking.try_set_value(false);
                });
            },
            std::time::Duration::from_millis(delay),
        );
    }

    /// One second passed: the clock moves and typing indicators expire.
    pub(crate) fn tick(self) {
        self.now.set(browser::now_ms());
        self.typists
            .update(|t| t.retain(|(_, until)| *until > browser::now_ms()));
    }

    /// An entry from the stream.
    fn on_entry(self, ctx: RoomCtx, my_id: &str, entry: RoomEntry) {
        if entry.seq <= self.head.get_value() {
            return;
        }
        self.head.set_value(entry.seq);
        let noteworthy = match &entry.event {
            RoomEvent::ChatUser { user_id, .. } => user_id != my_id,
            RoomEvent::TurnEnded { .. } | RoomEvent::PermissionRequested { .. } => true,
            _ => false,
        };
        match &entry.event {
            RoomEvent::ChatUser {
                user_id,
                display_name,
                text,
                ..
            } => {
                self.typists
                    .update(|t| t.retain(|(m, _)| &m.user_id != user_id));
                if user_id != my_id {
                    self.announce.set(format!("{display_name}: {text}"));
                }
            }
            RoomEvent::TurnEnded { .. } => self.announce.set("The agent finished its turn.".into()),
            RoomEvent::PermissionRequested { .. } => {
                self.announce.set("The agent asks for permission.".into())
            }
            _ => {}
        }
        self.apply(&entry);
        self.mark_read(ctx);
        if noteworthy && browser::page_hidden() {
            self.unread.update(|n| *n += 1);
        }
        request_animation_frame(browser::follow_bottom);
    }

    /// Someone else is typing.
    fn on_typing(self, my_id: &str, who: Member) {
        if who.user_id == my_id {
            return;
        }
        self.typists.update(|t| {
            t.retain(|(m, _)| m.user_id != who.user_id);
            t.push((who, browser::now_ms() + 4000.0));
        });
    }

    /// What the room's stream calls.
    pub(crate) fn callbacks(
        self,
        ctx: RoomCtx,
        my_id: String,
        threads: ThreadsState,
    ) -> browser::RoomCallbacks {
        let me = StoredValue::new(my_id);
        browser::RoomCallbacks {
            on_entry: Box::new(move |data| {
                if let Ok(entry) = serde_json::from_str::<RoomEntry>(&data) {
                    me.with_value(|id| self.on_entry(ctx, id, entry));
                }
            }),
            on_typing: Box::new(move |data| {
                if let Ok(who) = serde_json::from_str::<Member>(&data) {
                    me.with_value(|id| self.on_typing(id, who));
                }
            }),
            on_online: Box::new(move |data| {
                if let Ok(list) = serde_json::from_str::<Vec<Member>>(&data) {
                    self.online.set(list);
                }
            }),
            on_thread: Box::new(move |data| {
                if let Ok(pulse) = serde_json::from_str::<crate::model::ThreadPulse>(&data) {
                    threads.pulse(pulse);
                }
            }),
            on_reset: Box::new(move || self.reset()),
            on_status: Box::new(move |up| {
                self.connected.set(up);
                if up {
                    self.ever_connected.set(true);
                }
            }),
            last_seq: Box::new(move || self.head.get_value()),
        }
    }

    /// "Ada is typing…", "Ada, Bob are typing…", or nothing.
    pub(crate) fn typing_line(self) -> String {
        let names: Vec<String> = self
            .typists
            .with(|t| t.iter().map(|(m, _)| m.display_name.clone()).collect());
        match names.len() {
            0 => String::new(),
            1 => format!("{} is typing…", names[0]),
            _ => format!("{} are typing…", names.join(", ")),
        }
    }
}
