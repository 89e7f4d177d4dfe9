//! What needs you, in the page: the inbox (on the home page and beside the thread list), kept live
//! by the person's inbox stream, with its count in the tab's icon; browser notifications for new
//! items while the tab is not in front; and the "notify me" switch (browser permission, asked on
//! the click only, then a push subscription for when no tab is open).

use std::collections::{HashMap, HashSet};

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{
    answer_permission, inbox, inbox_read, notify_settings, push_subscribe, set_notify_level,
};
use crate::browser::notify as browser;
use crate::model::{InboxItem, InboxKind};

/// A new permission request notifies at once; an ended turn after this settle (a turn that
/// ends and is followed at once by the next prompt in the queue is not news yet).
const TURN_SETTLE_MS: i32 = 3000;
/// At most one notification per thread per minute.
const PER_THREAD_MS: f64 = 60_000.0;

/// The inbox as a page holds it: fetched again when the stream says something changed (once per
/// burst, and again if something changed during the fetch).
#[derive(Clone, Copy)]
pub struct InboxState {
    pub items: RwSignal<Vec<InboxItem>>,
    /// The thread this page shows (none on the home page): it raises no notification.
    showing: StoredValue<Option<String>>,
    /// What was in the inbox already: only what is new notifies.
    seen: StoredValue<Option<HashSet<(String, i64)>>>,
    /// When each thread last notified.
    notified: StoredValue<HashMap<String, f64>>,
    refetching: StoredValue<bool>,
    dirty: StoredValue<bool>,
}

impl InboxState {
    pub fn new(showing: Option<String>) -> Self {
        Self {
            items: RwSignal::new(Vec::new()),
            showing: StoredValue::new(showing),
            seen: StoredValue::new(None),
            notified: StoredValue::new(HashMap::new()),
            refetching: StoredValue::new(false),
            dirty: StoredValue::new(false),
        }
    }

    /// Opens the stream (in the browser only) and keeps the count in the tab's icon.
    pub fn start(self) {
        // The effect owns the stream (effects run in the browser only) and closes it with the page.
        Effect::new(move |open: Option<Option<browser::InboxStream>>| {
            if let Some(Some(stream)) = open {
                return Some(stream);
            }
            browser::open_inbox_stream(move |_| self.refetch())
        });
        Effect::new(move |_| browser::favicon_badge(self.items.with(Vec::len)));
    }

    pub fn count(self) -> usize {
        self.items.with(Vec::len)
    }

    pub fn refetch(self) {
        self.dirty.set_value(true);
        if self.refetching.get_value() {
            return;
        }
        self.refetching.set_value(true);
        self.fetch();
    }

    fn fetch(self) {
        self.dirty.set_value(false);
        spawn_local(async move {
            if let Ok(fresh) = inbox().await {
                self.arrived(fresh.items);
            }
            if self.dirty.try_get_value() == Some(true) {
                self.fetch();
            } else {
                self.refetching.try_set_value(false);
            }
        });
    }

    fn arrived(self, items: Vec<InboxItem>) {
        let keys: HashSet<(String, i64)> =
            items.iter().map(|i| (i.thread_id.clone(), i.seq)).collect();
        let new: Vec<InboxItem> = match self.seen.get_value() {
            // The first answer is what was waiting already: nothing to announce.
            None => Vec::new(),
            Some(seen) => items
                .iter()
                .filter(|i| !seen.contains(&(i.thread_id.clone(), i.seq)))
                .cloned()
                .collect(),
        };
        self.seen.set_value(Some(keys));
        self.items.try_set(items);
        for item in new {
            match item.kind {
                InboxKind::TurnEnded => browser::after(TURN_SETTLE_MS, move || {
                    // Still there (nobody looked, no new turn took over): now it is news.
                    if self.items.try_with(|l| {
                        l.iter()
                            .any(|i| i.thread_id == item.thread_id && i.seq == item.seq)
                    }) == Some(true)
                    {
                        self.notify(&item);
                    }
                }),
                _ => self.notify(&item),
            }
        }
    }

    /// A notification for an item, when the person allowed them, is not looking at this page
    /// or at that thread, and that thread did not notify within the minute.
    fn notify(self, item: &InboxItem) {
        if browser::permission() != "granted" {
            return;
        }
        let showing = self.showing.get_value();
        if browser::in_front() || showing.as_deref() == Some(item.thread_id.as_str()) {
            return;
        }
        let now = crate::browser::now_ms();
        let shared_key = format!("huddle-notified-{}", item.thread_id);
        // Shared by this person's tabs of this browser: one notification, not one per tab.
        let last = crate::browser::local_get(&shared_key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            .max(
                self.notified
                    .with_value(|n| n.get(&item.thread_id).copied().unwrap_or(0.0)),
            );
        if now - last < PER_THREAD_MS {
            return;
        }
        crate::browser::local_set(&shared_key, &now.to_string());
        self.notified.update_value(|n| {
            n.insert(item.thread_id.clone(), now);
        });
        let (title, body) = describe(item);
        browser::show(&title, &body, &item.thread_id, &item.url);
    }
}

/// A notification's (and a row's) title and line.
pub fn describe(item: &InboxItem) -> (String, String) {
    let place = if item.thread_title.is_empty() {
        item.workspace_name.clone()
    } else {
        format!("{} · {}", item.workspace_name, item.thread_title)
    };
    let what = match item.kind {
        InboxKind::Permission => "The agent asks permission".to_string(),
        InboxKind::TurnEnded => "Your turn ended".to_string(),
        InboxKind::Mention => format!(
            "{} mentioned you",
            item.author.clone().unwrap_or_else(|| "Someone".into())
        ),
    };
    (format!("{what} · {place}"), item.summary.clone())
}

/// The inbox: each item links to its row; a permission request is answered here.
#[component]
pub fn InboxPanel(state: InboxState) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    view! {
        <section class="inbox" aria-labelledby="inbox-title" data-testid="inbox">
            <h2 id="inbox-title">
                "Needs you "
                <span class="badge" data-testid="inbox-count">{move || state.count()}</span>
            </h2>
            <Show
                when=move || { state.count() > 0 }
                fallback=|| view! { <p class="muted" data-testid="inbox-empty">"Nothing waits on you."</p> }
            >
                <ul>
                    <For
                        each=move || state.items.get()
                        key=|i| (i.thread_id.clone(), i.seq, i.kind)
                        children=move |item| view! { <InboxRow item state error /> }
                    />
                </ul>
            </Show>
            <crate::ui::components::ErrorLine error />
        </section>
    }
}

#[component]
fn InboxRow(item: InboxItem, state: InboxState, error: RwSignal<Option<String>>) -> impl IntoView {
    let (title, body) = describe(&item);
    let kind = match item.kind {
        InboxKind::Permission => "permission",
        InboxKind::TurnEnded => "turn_ended",
        InboxKind::Mention => "mention",
    };
    let choices = item.permission.clone().map(|p| {
        let ws = item.workspace_id.clone();
        let thread = item.thread_id.clone();
        p.options
            .into_iter()
            .map(|o| {
                let (ws, thread, request) = (ws.clone(), thread.clone(), p.request_id.clone());
                let id = o.id.clone();
                view! {
                    <button
                        type="button"
                        class=format!(
                            "choice {}{}",
                            o.kind.as_str(),
                            if o.kind.as_str().starts_with("reject") { " secondary" } else { "" },
                        )
                        data-testid="inbox-choice"
                        on:click=move |_| {
                            let (ws, thread, request, id) = (ws.clone(), thread.clone(), request.clone(), id.clone());
                            spawn_local(async move {
                                match answer_permission(ws, Some(thread), request, id).await {
                                    Ok(()) => state.refetch(),
                                    Err(e) => error.set(Some(e.message)),
                                }
                            });
                        }
                    >
                        {o.name.clone()}
                    </button>
                }
            })
            .collect_view()
    });
    let done = (item.kind != InboxKind::Permission).then(|| {
        let (ws, thread, seq) = (item.workspace_id.clone(), item.thread_id.clone(), item.seq);
        view! {
            <button
                type="button"
                class="secondary"
                data-testid="inbox-done"
                on:click=move |_| {
                    let (ws, thread) = (ws.clone(), thread.clone());
                    spawn_local(async move {
                        match inbox_read(ws, thread, seq).await {
                            Ok(()) => state.refetch(),
                            Err(e) => error.set(Some(e.message)),
                        }
                    });
                }
            >
                "Done"
            </button>
        }
    });
    let label = match item.kind {
        InboxKind::Permission => "approval",
        InboxKind::TurnEnded => "turn ended",
        InboxKind::Mention => "mention",
    };
    view! {
        <li class=format!("inbox-item {kind}") data-testid="inbox-item" data-kind=kind>
            <span class=format!("badge kind-{kind}")>{label}</span>
            " "
            <a href=item.url.clone() rel="external">
                <strong>{title}</strong>
            </a>
            <p class="muted">{body}</p>
            <div class="choices">{choices} {done}</div>
        </li>
    }
}

/// "Notify me": asks the browser's permission on the click (never on its own), then subscribes
/// this browser to pushes; and what gets pushed.
#[component]
pub fn NotifySwitch() -> impl IntoView {
    let permission = RwSignal::new(String::from("default"));
    let note = RwSignal::new(None::<String>);
    let level = RwSignal::new(String::from("all"));
    Effect::new(move |_| {
        permission.set(browser::permission());
        spawn_local(async move {
            if let Ok(s) = notify_settings().await {
                level.set(s.level.as_str().to_string());
            }
        });
    });
    let turn_on = move |_| {
        browser::request_permission(move |answer| {
            permission.set(answer.clone());
            if answer != "granted" {
                note.set(Some("The browser did not allow notifications.".into()));
                return;
            }
            spawn_local(async move {
                let Ok(settings) = notify_settings().await else {
                    return;
                };
                browser::subscribe_push(settings.vapid_public_key, move |sub| match sub {
                    Ok((endpoint, p256dh, auth)) => spawn_local(async move {
                        let keys = crate::model::PushKeys { p256dh, auth };
                        match push_subscribe(endpoint, keys).await {
                            Ok(_) => note.set(Some("On, also when no Huddle tab is open.".into())),
                            Err(e) => note.set(Some(e.message)),
                        }
                    }),
                    Err(why) => {
                        leptos::logging::log!("push subscription failed: {why}");
                        note.set(Some(
                            "On while a Huddle tab is open (this browser cannot receive pushes)."
                                .into(),
                        ))
                    }
                });
            });
        });
    };
    let on_level = move |ev: leptos::ev::Event| {
        let value = event_target_value(&ev);
        spawn_local(async move {
            if let Ok(s) = set_notify_level(value).await {
                level.set(s.level.as_str().to_string());
            }
        });
    };
    view! {
        <div class="notify" data-testid="notify">
            <Show
                when=move || permission.get() == "granted"
                fallback=move || view! {
                    <button type="button" class="secondary" data-testid="notify-me" on:click=turn_on>
                        "Notify me"
                    </button>
                }
            >
                <span class="badge" data-testid="notify-on">"Notifications on"</span>
            </Show>
            <label>
                "Push "
                <select data-testid="notify-level" prop:value=move || level.get() on:change=on_level>
                    <option value="all">"everything"</option>
                    <option value="important">"approvals and mentions"</option>
                    <option value="none">"nothing"</option>
                </select>
            </label>
            <Show when=move || note.get().is_some()>
                <span class="muted" data-testid="notify-note">{move || note.get().unwrap_or_default()}</span>
            </Show>
        </div>
    }
}

/// Mutes pushes from one workspace for this person (any role).
#[component]
pub fn MuteToggle(ws: String) -> impl IntoView {
    let muted = RwSignal::new(false);
    let ws = StoredValue::new(ws);
    Effect::new(move |_| {
        spawn_local(async move {
            if let Ok(s) = notify_settings().await {
                muted.set(s.muted.contains(&ws.get_value()));
            }
        });
    });
    let on_change = move |ev: leptos::ev::Event| {
        let on = event_target_checked(&ev);
        spawn_local(async move {
            if let Ok(s) = crate::api::mute_workspace(ws.get_value(), on).await {
                muted.set(s.muted.contains(&ws.get_value()));
            }
        });
    };
    view! {
        <label class="mute" title="Pushes to your devices when no Huddle tab is open">
            <input type="checkbox" data-testid="mute-workspace" prop:checked=move || muted.get() on:change=on_change />
            " Mute pushes from this workspace"
        </label>
    }
}

/// The owner sets the workspace's team webhook; its signing secret is shown once.
#[component]
pub fn WebhookForm(ws: String) -> impl IntoView {
    let url = NodeRef::<leptos::html::Input>::new();
    let secret = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<String>);
    let ws = StoredValue::new(ws);
    let save = move |remove: bool| {
        let value = if remove {
            None
        } else {
            url.get().map(|u| u.value())
        };
        spawn_local(async move {
            match crate::api::set_webhook(ws.get_value(), value).await {
                Ok(s) => {
                    error.set(None);
                    secret.set(Some(s.secret.unwrap_or_else(|| "(removed)".into())));
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    view! {
        <form class="manage-block webhook" on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); save(false) }>
            <h2>"Team webhook"</h2>
            <p>"A signed JSON POST (Slack-compatible) on each permission request and each ended turn."</p>
            <input type="url" node_ref=url data-testid="webhook-url" placeholder="https://hooks.example/…" required />
            <button type="submit" data-testid="save-webhook">"Save"</button>
            " "
            <button type="button" class="secondary" on:click=move |_| save(true)>"Remove"</button>
            <Show when=move || secret.get().is_some()>
                <p class="link-out">
                    "Signing secret, shown this once: "
                    <input readonly data-testid="webhook-secret" prop:value=move || secret.get().unwrap_or_default() />
                </p>
            </Show>
            <crate::ui::components::ErrorLine error />
        </form>
    }
}
