//! The thread list beside the room (one tap away on phones): each thread's title, agent, live
//! status, this person's unread count and last activity, most recently active first; new thread
//! (with its agent), rename, archive and unarchive, and the shown thread's exports.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{archive_thread, create_thread, rename_thread, threads};
use crate::model::{AgentChoice, ThreadList, ThreadPulse, ThreadStatus, ThreadSummary, thread_url};

/// The list as the page holds it: fetched again (at most a few times a second) when a pulse
/// says it changed; a pulse's status shows at once.
#[derive(Clone, Copy)]
pub struct ThreadsState {
    pub list: RwSignal<Vec<ThreadSummary>>,
    pub agents: StoredValue<Vec<AgentChoice>>,
    ws: StoredValue<String>,
    /// A fetch is on its way.
    refetching: StoredValue<bool>,
    /// Something changed since the fetch on its way was sent: it is fetched again after it.
    dirty: StoredValue<bool>,
}

impl ThreadsState {
    pub fn new(ws: String, initial: ThreadList) -> Self {
        Self {
            list: RwSignal::new(initial.threads),
            agents: StoredValue::new(initial.agents),
            ws: StoredValue::new(ws),
            refetching: StoredValue::new(false),
            dirty: StoredValue::new(false),
        }
    }

    /// A thread changed somewhere in the workspace.
    pub fn pulse(self, pulse: ThreadPulse) {
        if let Some(status) = pulse.status {
            self.list.update(|list| {
                if let Some(t) = list.iter_mut().find(|t| t.thread_id == pulse.thread_id) {
                    t.status = status;
                    t.started_by = pulse.started_by.clone();
                }
            });
        }
        self.refetch();
    }

    /// Fetches the list again, once for a burst of pulses; a change during a fetch gets another
    /// one after it, so an answer older than the last pulse never stays.
    pub fn refetch(self) {
        self.dirty.set_value(true);
        if self.refetching.get_value() {
            return;
        }
        self.refetching.set_value(true);
        self.fetch_soon();
    }

    fn fetch_soon(self) {
        set_timeout(
            move || {
                let Some(ws) = self.ws.try_get_value() else {
                    return;
                };
                self.dirty.set_value(false);
                spawn_local(async move {
                    if let Ok(fresh) = threads(ws).await {
                        self.list.try_set(fresh.threads);
                    }
                    if self.dirty.try_get_value() == Some(true) {
                        self.fetch_soon();
                    } else {
                        self.refetching.try_set_value(false);
                    }
                });
            },
            std::time::Duration::from_millis(250),
        );
    }
}

fn status_text(t: &ThreadSummary) -> String {
    match (t.status, &t.started_by) {
        (ThreadStatus::Working, Some(who)) => format!("working for {who}"),
        (status, _) => status.label().to_string(),
    }
}

#[component]
pub fn ThreadListPanel(
    state: ThreadsState,
    needs_you: crate::ui::inbox::InboxState,
    current: String,
    can_act: bool,
    open: RwSignal<bool>,
) -> impl IntoView {
    let show_archived = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let creating = RwSignal::new(false);
    let ws = state.ws.get_value();
    let current = StoredValue::new(current);
    let agent_pick = NodeRef::<leptos::html::Select>::new();
    let name_input = NodeRef::<leptos::html::Input>::new();
    let ws_new = ws.clone();
    let new_thread = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let agent = agent_pick
            .get()
            .map(|s| s.value())
            .filter(|a| !a.is_empty());
        let title = name_input
            .get()
            .map(|i| i.value())
            .filter(|t| !t.trim().is_empty());
        let ws = ws_new.clone();
        spawn_local(async move {
            match create_thread(ws, agent, title, None).await {
                Ok(made) => crate::browser::go(&made.url),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let shown = move || {
        let archived = show_archived.get();
        state.list.with(|l| {
            l.iter()
                .filter(|t| t.archived == archived)
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let ws_rows = StoredValue::new(ws.clone());
    view! {
        <nav
            class="threads"
            class:open=move || open.get()
            aria-label="Threads"
            data-testid="threads"
        >
            <header>
                <h2>"Threads"</h2>
                <button
                    type="button"
                    class="link close-threads"
                    aria-label="Close the thread list"
                    on:click=move |_| open.set(false)
                >
                    "×"
                </button>
            </header>
            <Show when=move || { needs_you.count() > 0 }>
                <crate::ui::inbox::InboxPanel state=needs_you />
            </Show>
            <crate::ui::inbox::MuteToggle ws=ws.clone() />
            {can_act
                .then(|| {
                    view! {
                        <Show
                            when=move || creating.get()
                            fallback=move || {
                                view! {
                                    <button
                                        type="button"
                                        class="new-thread"
                                        data-testid="new-thread"
                                        on:click=move |_| creating.set(true)
                                    >
                                        "+ New thread"
                                    </button>
                                }
                            }
                        >
                            <form class="new-thread-form" on:submit=new_thread.clone()>
                                <input
                                    node_ref=name_input
                                    placeholder="Name (optional)"
                                    maxlength="120"
                                    data-testid="new-thread-name"
                                />
                                <select node_ref=agent_pick data-testid="new-thread-agent" aria-label="Agent">
                                    {state
                                        .agents
                                        .get_value()
                                        .into_iter()
                                        .map(|a| view! { <option value=a.id.clone()>{a.id.clone()}</option> })
                                        .collect_view()}
                                </select>
                                <button type="submit" data-testid="create-thread">
                                    "Start"
                                </button>
                                <button type="button" class="secondary" on:click=move |_| creating.set(false)>
                                    "Cancel"
                                </button>
                            </form>
                        </Show>
                    }
                })}
            <ul>
                <For
                    each=shown
                    key=|t| (t.thread_id.clone(), t.title.clone(), t.status, t.unread, t.archived, t.started_by.clone(), t.last_activity)
                    children=move |t| {
                        let here = current.with_value(|c| *c == t.thread_id);
                        let url = thread_url(&ws_rows.get_value(), &t.thread_id);
                        let status = status_text(&t);
                        let unread = if here { 0 } else { t.unread };
                        view! {
                            <li
                                class="thread"
                                class:current=here
                                data-testid="thread"
                                data-thread-id=t.thread_id.clone()
                                data-status=format!("{:?}", t.status).to_lowercase()
                            >
                                // A fresh page per thread: each room is rendered by the server
                                // with its own history, and nothing of the last one lingers.
                                <a href=url rel="external" aria-current=here.then_some("page")>
                                    <span class="thread-title" data-testid="thread-title">{t.title.clone()}</span>
                                    {(unread > 0)
                                        .then(|| {
                                            let label = if unread >= 100 { "99+".to_string() } else { unread.to_string() };
                                            view! { <span class="unread" data-testid="unread" title="Unread">{label}</span> }
                                        })}
                                    <span class="thread-meta">
                                        <span class="agent">{t.agent.clone()}</span>
                                        " · "
                                        <span class="status" data-testid="thread-status">{status}</span>
                                        " · "
                                        <crate::ui::components::Clock at=t.last_activity />
                                    </span>
                                </a>
                                {can_act.then(|| view! { <ThreadActions state thread=t.clone() error /> })}
                            </li>
                        }
                    }
                />
            </ul>
            <label class="show-archived">
                <input
                    type="checkbox"
                    data-testid="show-archived"
                    on:change=move |ev| show_archived.set(event_target_checked(&ev))
                />
                " Archived threads"
            </label>
            <crate::ui::components::ErrorLine error />
        </nav>
    }
}

/// Rename and archive (or bring back) one thread.
#[component]
fn ThreadActions(
    state: ThreadsState,
    thread: ThreadSummary,
    error: RwSignal<Option<String>>,
) -> impl IntoView {
    let renaming = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    let id = StoredValue::new(thread.thread_id.clone());
    let archived = thread.archived;
    let title = thread.title.clone();
    let done = move |r: Result<(), crate::api::ApiError>| match r {
        Ok(()) => {
            error.set(None);
            state.refetch();
        }
        Err(e) => error.set(Some(e.message)),
    };
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(el) = input.get() else { return };
        let value = el.value();
        renaming.set(false);
        let ws = state.ws.get_value();
        spawn_local(async move { done(rename_thread(ws, id.get_value(), value).await) });
    };
    let archive = move |_| {
        let ws = state.ws.get_value();
        spawn_local(async move { done(archive_thread(ws, id.get_value(), !archived).await) });
    };
    view! {
        <Show
            when=move || renaming.get()
            fallback=move || {
                view! {
                    <span class="thread-actions">
                        <button type="button" class="link" data-testid="rename-thread" on:click=move |_| renaming.set(true)>
                            "Rename"
                        </button>
                        <button type="button" class="link" data-testid="archive-thread" on:click=archive>
                            {if archived { "Unarchive" } else { "Archive" }}
                        </button>
                    </span>
                }
            }
        >
            <form class="rename-thread" on:submit=rename>
                <input node_ref=input value=title.clone() maxlength="120" data-testid="thread-name" />
                <button type="submit" data-testid="save-thread-name">"Save"</button>
            </form>
        </Show>
    }
}

/// "Continue in a new thread" from a row: the new thread's agent starts with the conversation up
/// to it.
#[component]
pub fn ForkButton(seq: i64) -> impl IntoView {
    let ctx = expect_context::<super::RoomCtx>();
    let fork = move |_| {
        let ws = ctx.ws.get_value();
        let from = crate::model::ForkFrom {
            thread_id: ctx.thread.get_value(),
            seq,
        };
        let error = ctx.error;
        spawn_local(async move {
            match create_thread(ws, None, None, Some(from)).await {
                Ok(made) => crate::browser::go(&made.url),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    view! {
        <button
            type="button"
            class="link fork"
            data-testid="fork"
            title="Continue the conversation up to here in a new thread"
            on:click=fork
        >
            "Continue in a new thread"
        </button>
    }
}
