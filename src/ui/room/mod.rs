//! The room of a thread: it composes the header, the thread list, the timeline, the dock and
//! the composer, around the live state.

pub mod composer;
pub mod dock;
pub mod header;
pub mod live;
pub mod manage;
pub mod mentions;
pub mod rows;
pub mod session_options;
pub mod threads;
pub mod timeline;

use leptos::prelude::*;
use leptos_meta::Title;

use crate::browser;
use crate::model::{Access, Member};
use crate::timeline::RoomPage;
use crate::ui::hydrated;
use std::collections::HashMap;

/// What the rows of a room share.
#[derive(Clone, Copy)]
pub struct RoomCtx {
    pub(crate) ws: StoredValue<String>,
    /// The thread shown.
    pub(crate) thread: StoredValue<String>,
    /// Whether the page's URL names the thread.
    pub(crate) by_thread: bool,
    pub(crate) me: RwSignal<Option<Member>>,
    pub(crate) rendered: RwSignal<HashMap<String, String>>,
    pub(crate) error: RwSignal<Option<String>>,
    pub(crate) hydrated: RwSignal<bool>,
    /// What the visitor may do here (the server checks every action again).
    pub(crate) access: Access,
    pub(crate) csrf: StoredValue<String>,
}

impl RoomCtx {
    /// A Leptos action of the room as the visitor: `f` gets the workspace, the thread and the
    /// action's input; its error shows on the room's error line (and a success clears it).
    pub(crate) fn action<I, F, Fut>(self, f: F) -> Action<I, Result<(), crate::api::ApiError>>
    where
        I: Send + Sync + 'static,
        F: Fn(String, Option<String>, &I) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), crate::api::ApiError>> + 'static,
    {
        let action = Action::new_unsync(move |input: &I| {
            f(self.ws.get_value(), Some(self.thread.get_value()), input)
        });
        Effect::new(move |_| match action.value().get() {
            Some(Ok(())) => self.error.set(None),
            Some(Err(e)) => self.error.set(Some(e.message)),
            None => {}
        });
        action
    }
}

/// The room of a thread, composed of its parts around its live state.
#[component]
pub(crate) fn Room(
    page: RoomPage,
    /// Opened by the thread's own URL (not the workspace's): a no-JS post comes back to it.
    by_thread: bool,
) -> impl IntoView {
    let RoomPage {
        me: who,
        access,
        info,
        fold,
        head,
        rendered,
        older,
        threads: thread_list,
    } = page;
    let ctx = RoomCtx {
        ws: StoredValue::new(info.workspace_id.clone()),
        thread: StoredValue::new(info.thread_id.clone()),
        by_thread,
        me: RwSignal::new(Some(Member {
            user_id: who.person_id.clone(),
            display_name: who.display_name.clone(),
            role: Some(access.role),
        })),
        rendered: RwSignal::new(rendered.into_iter().collect()),
        error: RwSignal::new(None),
        hydrated: hydrated(),
        access,
        csrf: StoredValue::new(who.csrf.clone()),
    };
    provide_context(ctx);
    let live = live::LiveRoom::new(
        fold,
        head,
        older,
        info.name.clone(),
        info.online.clone(),
        ctx.rendered,
    );
    let threads = threads::ThreadsState::new(info.workspace_id.clone(), thread_list);
    let needs_you = crate::ui::inbox::InboxState::new(Some(info.thread_id.clone()));
    needs_you.start();
    let threads_open = RwSignal::new(false);

    // Your name is kept on the server; a change shows on your own messages from now on.
    let name = RwSignal::new(who.display_name.clone());
    Effect::new(move |_| {
        let n = name.get();
        ctx.me.update(|m| {
            if let Some(m) = m {
                m.display_name = n;
            }
        });
    });
    Effect::new(move |_| {
        // A link to a row (from the inbox or a notification) opens at that row.
        if !browser::reveal_linked_row() {
            browser::scroll_to_bottom();
        }
        browser::on_scroll_near_top(move || live.load_older(ctx));
        browser::every(1000, move || live.tick());
        browser::on_visibility_change(move |hidden| {
            if !hidden {
                live.unread.set(0);
                live.mark_read(ctx);
            }
        });
        live.mark_read(ctx);
    });
    // The live stream, once we know who is watching. The effect owns it (and closes it when the
    // room goes away): effects run only in the browser, so no server thread ever touches it.
    Effect::new(move |open: Option<Option<browser::RoomStream>>| {
        if let Some(Some(stream)) = open {
            return Some(stream);
        }
        let my_id = ctx
            .me
            .with_untracked(|m| m.as_ref().map(|m| m.user_id.clone()))?;
        let url = format!(
            "/api/workspace/{}/events?threadId={}",
            ctx.ws.get_value(),
            ctx.thread.get_value()
        );
        Some(browser::RoomStream::open(
            url,
            live.callbacks(ctx, my_id, threads),
        ))
    });
    // The server renders the plain title; the unread count is the browser's business (a reactive
    // <Title> is read by leptos_meta after the page's reactive arena is gone, and panics).
    let title = format!("{} · Huddle", info.name);
    Effect::new(move |_| {
        let title = format!("{} · Huddle", live.name.get());
        browser::set_title(&match live.unread.get() {
            0 => title,
            n => format!("({n}) {title}"),
        })
    });
    let managing = RwSignal::new(false);
    let sandbox = info.sandbox.clone();
    let instance_owner = who.instance_owner;
    let thread_id = info.thread_id.clone();
    let workspace_id = info.workspace_id.clone();
    view! {
        <Title text=title />
        <threads::ThreadListPanel
            state=threads
            needs_you
            current=thread_id.clone()
            can_act=access.role.can_act()
            open=threads_open
        />
        <div class="room with-threads" data-workspace-id=workspace_id data-thread-id=thread_id>
            <header::RoomHeader info live name threads_open managing />
            <Show when=move || managing.get()>
                <manage::ManagePanel name=live.name instance_owner sandbox=sandbox.clone() />
            </Show>
            <Show when=move || ctx.hydrated.get() && !live.connected.get()>
                <div class="banner" role="status" data-testid="reconnecting">
                    {move || if live.ever_connected.get() { "Reconnecting to the room…" } else { "Connecting to the room…" }}
                </div>
            </Show>
            <p class="sr-only" aria-live="polite">
                {move || live.announce.get()}
            </p>
            <timeline::Timeline live />
            <dock::Dock live my_id=who.person_id.clone() />
        </div>
    }
}
