//! The UI: the HTML shell, the routes and their pages. Rendered on the server with the full history,
//! hydrated in the browser, then kept live over server-sent events.

use std::collections::{HashMap, HashSet};

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::{use_navigate, use_params_map};
use leptos_router::{SsrMode, path};

use crate::api::{
    ErrorCode, answer_permission, cancel, create_workspace, list_agents, prompt, render_markdown,
    room_snapshot, typing,
};
use crate::browser;
use crate::model::{
    MAX_NAME_CHARS, MAX_PROMPT_CHARS, Member, NoticeLevel, RoomEntry, RoomEvent, RoomSnapshot,
};
use crate::timeline::{self, DiffView, Item, PermissionView, ToolView, View};

const NAME_KEY: &str = "huddle.displayName";
const USER_KEY: &str = "huddle.userId";
const VISITED_KEY: &str = "huddle.visited";

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/huddle.css" />
        <Title text="Huddle" />
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/") view=HomePage />
                <Route path=path!("/w/:id") view=WorkspacePage ssr=SsrMode::Async />
            </Routes>
        </Router>
    }
}

/// True once the page runs in the browser: what differs from the server's render waits for it.
fn hydrated() -> RwSignal<bool> {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    hydrated
}

/// A time as `HH:MM` in UTC (what the server can render).
fn utc_clock(ms: i64) -> String {
    let mins = ms.div_euclid(60_000);
    format!(
        "{:02}:{:02}",
        mins.div_euclid(60).rem_euclid(24),
        mins.rem_euclid(60)
    )
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Visited {
    id: String,
    agent: String,
}

fn visited() -> Vec<Visited> {
    browser::local_get(VISITED_KEY)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

#[component]
fn HomePage() -> impl IntoView {
    let navigate = use_navigate();
    let agents = Resource::new(|| (), |_| list_agents());
    let agent = NodeRef::<leptos::html::Select>::new();
    let pending = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let recent = RwSignal::new(Vec::<Visited>::new());
    Effect::new(move |_| recent.set(visited()));
    // Without WASM the form posts to /new; once hydrated it calls the JSON API instead.
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let agent = agent.get().map(|s| s.value());
        let navigate = navigate.clone();
        pending.set(true);
        spawn_local(async move {
            match create_workspace(agent).await {
                Ok(created) => navigate(&created.url, Default::default()),
                Err(e) => {
                    error.set(Some(e.message));
                    pending.set(false);
                }
            }
        });
    };
    view! {
        <main class="home">
            <h1>"Huddle"</h1>
            <p class="tagline">"One coding agent in a sandbox, and your whole team in the room with it."</p>
            <form class="create" method="post" action="/new" on:submit=on_submit>
                <label for="agent">"Agent"</label>
                <select id="agent" name="agent" node_ref=agent>
                    <Suspense fallback=|| view! { <option value="mock">"mock — needs no credentials"</option> }>
                        {move || Suspend::new(async move {
                            let list = agents.await.unwrap_or_default();
                            list.into_iter()
                                .map(|a| {
                                    let note = if a.id == "mock" {
                                        "needs no credentials"
                                    } else if !a.installed {
                                        "not installed"
                                    } else if !a.credentials_available {
                                        "needs credentials"
                                    } else {
                                        "ready"
                                    };
                                    let label = format!("{} — {note}", a.id);
                                    let selected = a.id == "mock";
                                    view! {
                                        <option value=a.id selected=selected>
                                            {label}
                                        </option>
                                    }
                                })
                                .collect_view()
                        })}
                    </Suspense>
                </select>
                <button type="submit" data-testid="new-workspace" disabled=move || pending.get()>
                    "New workspace"
                </button>
            </form>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert">
                    {move || error.get()}
                </p>
            </Show>
            <Show when=move || !recent.read().is_empty()>
                <section class="recent" aria-labelledby="recent-title">
                    <h2 id="recent-title">"Workspaces you visited"</h2>
                    <ul data-testid="visited">
                        <For each=move || recent.get() key=|v| v.id.clone() let:v>
                            <li>
                                <a href=format!("/w/{}", v.id)>
                                    <code>{v.id[..8.min(v.id.len())].to_string()}</code>
                                    " · "
                                    {v.agent}
                                </a>
                            </li>
                        </For>
                    </ul>
                </section>
            </Show>
        </main>
    }
}

#[component]
fn WorkspacePage() -> impl IntoView {
    let params = use_params_map();
    let snapshot = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        room_snapshot,
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading workspace…"</p> }>
            {move || Suspend::new(async move {
                match snapshot.await {
                    Ok(snapshot) => view! { <Room snapshot /> }.into_any(),
                    Err(e) if e.code == ErrorCode::NotFound => view! { <NotFound /> }.into_any(),
                    Err(e) => {
                        view! {
                            <main>
                                <p class="error" role="alert">
                                    {e.message}
                                </p>
                            </main>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// What the rows of a room share.
#[derive(Clone, Copy)]
struct RoomCtx {
    ws: StoredValue<String>,
    me: RwSignal<Option<Member>>,
    rendered: RwSignal<HashMap<String, String>>,
    error: RwSignal<Option<String>>,
    hydrated: RwSignal<bool>,
}

impl RoomCtx {
    /// Runs an action as the current user; its error is shown to them.
    fn act<F, Fut>(self, f: F)
    where
        F: FnOnce(String, Member) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), crate::api::ApiError>> + 'static,
    {
        let Some(me) = self.me.get_untracked() else {
            return;
        };
        let ws = self.ws.get_value();
        let error = self.error;
        spawn_local(async move {
            match f(ws, me).await {
                Ok(()) => error.set(None),
                Err(e) => error.set(Some(e.message)),
            }
        });
    }
}

#[component]
fn Room(snapshot: RoomSnapshot) -> impl IntoView {
    let RoomSnapshot {
        info,
        entries: initial,
        rendered: initial_html,
    } = snapshot;
    let hydrated = hydrated();
    let ctx = RoomCtx {
        ws: StoredValue::new(info.workspace_id.clone()),
        me: RwSignal::new(None),
        rendered: RwSignal::new(initial_html.into_iter().collect()),
        error: RwSignal::new(None),
        hydrated,
    };
    provide_context(ctx);
    let RoomCtx {
        ws,
        me,
        rendered,
        error,
        ..
    } = ctx;
    let entries = RwSignal::new(initial);
    let timeline = Memo::new(move |_| entries.with(|e| timeline::build(e)));
    // Who is in the room: the server's list, kept current by `online` events (never from the log).
    let online = RwSignal::new(info.online.clone());
    let connected = RwSignal::new(false);
    let ever_connected = RwSignal::new(false);
    let typists = RwSignal::new(Vec::<(Member, f64)>::new());
    let unread = RwSignal::new(0u32);
    // What a screen reader hears: new messages and turn ends, not every streamed chunk.
    let announce = RwSignal::new(String::new());
    let now = RwSignal::new(0f64);
    let agent = info.agent.clone();

    // Who am I: remembered by this browser. Nobody yet: the name dialog asks.
    Effect::new(move |_| {
        if let Some(name) = browser::local_get(NAME_KEY) {
            let user_id = browser::local_get(USER_KEY).unwrap_or_else(|| {
                let id = browser::random_id();
                browser::local_set(USER_KEY, &id);
                id
            });
            me.set(Some(Member {
                user_id,
                display_name: name,
            }));
        }
    });
    {
        let agent = agent.clone();
        Effect::new(move |_| {
            let mut list = visited();
            let id = ws.get_value();
            list.retain(|v| v.id != id);
            list.insert(
                0,
                Visited {
                    id,
                    agent: agent.clone(),
                },
            );
            list.truncate(20);
            browser::local_set(
                VISITED_KEY,
                &serde_json::to_string(&list).unwrap_or_default(),
            );
        });
    }
    Effect::new(move |_| {
        browser::every(1000, move || {
            now.set(browser::now_ms());
            typists.update(|t| t.retain(|(_, until)| *until > browser::now_ms()));
        });
        browser::on_visibility_change(move |hidden| {
            if !hidden {
                unread.set(0);
            }
        });
    });

    // The live stream, once we know who is watching. The effect owns it (and closes it when the room
    // goes away): effects run only in the browser, so no server thread ever touches it.
    Effect::new(move |open: Option<Option<browser::RoomStream>>| {
        if let Some(Some(stream)) = open {
            return Some(stream);
        }
        let m = me.get()?;
        let url = format!(
            "/api/workspace/{}/events?userId={}&displayName={}",
            ws.get_value(),
            browser::encode(&m.user_id),
            browser::encode(&m.display_name)
        );
        let my_id = m.user_id.clone();
        let callbacks = browser::RoomCallbacks {
            on_entry: Box::new(move |data| {
                let Ok(entry) = serde_json::from_str::<RoomEntry>(&data) else {
                    return;
                };
                let last = entries.with_untracked(|v| v.last().map(|e| e.seq).unwrap_or(0));
                if entry.seq <= last {
                    return; // Already here: a resumed stream never doubles an entry.
                }
                let noteworthy = match &entry.event {
                    RoomEvent::ChatUser { user_id, .. } => *user_id != my_id,
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
                        typists.update(|t| t.retain(|(m, _)| &m.user_id != user_id));
                        if *user_id != my_id {
                            announce.set(format!("{display_name}: {text}"));
                        }
                    }
                    RoomEvent::TurnEnded { .. } => {
                        announce.set("The agent finished its turn.".into())
                    }
                    RoomEvent::PermissionRequested { .. } => {
                        announce.set("The agent asks for permission.".into())
                    }
                    _ => {}
                }
                entries.update(|v| v.push(entry));
                if noteworthy && browser::page_hidden() {
                    unread.update(|n| *n += 1);
                }
                request_animation_frame(browser::follow_bottom);
            }),
            on_typing: Box::new(move |data| {
                let Ok(who) = serde_json::from_str::<Member>(&data) else {
                    return;
                };
                if me.with_untracked(|m| m.as_ref().is_some_and(|m| m.user_id == who.user_id)) {
                    return;
                }
                typists.update(|t| {
                    t.retain(|(m, _)| m.user_id != who.user_id);
                    t.push((who, browser::now_ms() + 4000.0));
                });
            }),
            on_online: Box::new(move |data| {
                if let Ok(list) = serde_json::from_str::<Vec<Member>>(&data) {
                    online.set(list);
                }
            }),
            // The whole log follows: start from nothing rather than keep what it no longer has.
            on_reset: Box::new(move || entries.set(Vec::new())),
            on_status: Box::new(move |up| {
                connected.set(up);
                if up {
                    ever_connected.set(true);
                }
            }),
            last_seq: Box::new(move || {
                entries.with_untracked(|v| v.last().map(|e| e.seq).unwrap_or(0))
            }),
        };
        Some(browser::RoomStream::open(url, callbacks))
    });

    // Finished agent messages are rendered (markdown, sanitised) on the server.
    let asked = StoredValue::new(HashSet::<String>::new());
    Effect::new(move |_| {
        let done = timeline.with(timeline::finished_agent_texts);
        for (key, text) in done {
            if rendered.with_untracked(|r| r.contains_key(&key))
                || asked.with_value(|a| a.contains(&key))
            {
                continue;
            }
            asked.update_value(|a| {
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
    });

    // The server renders the plain title; the unread count is the browser's business (a reactive
    // <Title> is read by leptos_meta after the page's reactive arena is gone, and panics).
    let title = format!("Huddle · {agent}");
    {
        let title = title.clone();
        Effect::new(move |_| {
            browser::set_title(&match unread.get() {
                0 => title.clone(),
                n => format!("({n}) {title}"),
            })
        });
    }
    let copied = RwSignal::new(false);
    let copy_invite = move |_| {
        browser::copy_to_clipboard(&browser::location_href());
        copied.set(true);
        set_timeout(move || copied.set(false), std::time::Duration::from_secs(2));
    };
    let stop = move |_| ctx.act(|ws, me| cancel(ws, me.user_id, Some(me.display_name), false));
    let stop_and_clear =
        move |_| ctx.act(|ws, me| cancel(ws, me.user_id, Some(me.display_name), true));
    let typing_line = move || {
        let names: Vec<String> =
            typists.with(|t| t.iter().map(|(m, _)| m.display_name.clone()).collect());
        match names.len() {
            0 => String::new(),
            1 => format!("{} is typing…", names[0]),
            _ => format!("{} are typing…", names.join(", ")),
        }
    };
    let id_for_header = info.workspace_id.clone();
    let id_attr = info.workspace_id.clone();
    view! {
        <Title text=title />
        <div class="room" data-workspace-id=id_attr>
            <header class="room-header">
                <a class="brand" href="/">
                    "Huddle"
                </a>
                <div class="room-title">
                    <h1>"Workspace " <code data-testid="workspace-id">{id_for_header}</code></h1>
                    <p class="room-facts">
                        "Agent "
                        <strong data-testid="agent">{agent.clone()}</strong>
                        " · sandbox "
                        {info.sandbox_id.clone()}
                        " · in "
                        <code data-testid="working-dir">{info.working_dir.clone()}</code>
                    </p>
                </div>
                <div class="room-tools">
                    <ul class="online" aria-label="Online" data-testid="online">
                        <For
                            each=move || online.get()
                            key=|m| m.user_id.clone()
                            children=move |m| {
                                let initial = m.display_name.chars().next().unwrap_or('?').to_uppercase().to_string();
                                view! {
                                    <li title=m.display_name.clone()>
                                        <span class="avatar" aria-hidden="true">
                                            {initial}
                                        </span>
                                        <span class="name">{m.display_name.clone()}</span>
                                    </li>
                                }
                            }
                        />
                    </ul>
                    <button type="button" class="secondary" data-testid="copy-invite" on:click=copy_invite>
                        {move || if copied.get() { "Link copied" } else { "Copy invite link" }}
                    </button>
                </div>
            </header>
            <Show when=move || me.get().is_some() && !connected.get()>
                <div class="banner" role="status" data-testid="reconnecting">
                    {move || if ever_connected.get() { "Reconnecting to the room…" } else { "Connecting to the room…" }}
                </div>
            </Show>
            <p class="sr-only" aria-live="polite">
                {move || announce.get()}
            </p>
            <main class="timeline" data-testid="timeline">
                <Show when=move || timeline.with(|t| t.items.is_empty())>
                    <p class="empty">"Nothing here yet. Say hello to the agent below."</p>
                </Show>
                <For
                    each=move || timeline.get().items
                    key=|item| (item.key.clone(), item.rev)
                    children=move |item| view! { <Row item /> }
                />
            </main>
            <footer class="dock">
                {move || {
                    timeline
                        .get()
                        .running
                        .map(|turn| {
                            let started = turn.started_at as f64;
                            view! {
                                <div class="turn" role="status" data-testid="turn-status">
                                    <span class="spinner" aria-hidden="true"></span>
                                    <span>
                                        "Agent is working for " {turn.display_name}
                                        {move || {
                                            let secs = ((now.get() - started) / 1000.0).max(0.0) as u64;
                                            if now.get() > 0.0 { format!(" · {secs}s") } else { String::new() }
                                        }}
                                    </span>
                                    <button type="button" class="danger" data-testid="stop" on:click=stop>
                                        "Stop"
                                    </button>
                                    <Show when=move || timeline.with(|t| !t.queue.is_empty())>
                                        <button
                                            type="button"
                                            class="danger"
                                            data-testid="stop-and-clear"
                                            on:click=stop_and_clear
                                        >
                                            "Stop and clear the queue"
                                        </button>
                                    </Show>
                                </div>
                            }
                        })
                }}
                <Show when=move || timeline.with(|t| !t.queue.is_empty())>
                    <div class="queue" data-testid="queue">
                        <h2>"Up next"</h2>
                        <ol>
                            <For each=move || timeline.get().queue key=|w| w.seq let:w>
                                <li>
                                    <span class="author">{w.display_name}</span>
                                    ": "
                                    <span class="text">{w.text}</span>
                                </li>
                            </For>
                        </ol>
                    </div>
                </Show>
                <p class="typing" aria-live="polite" data-testid="typing">
                    {typing_line}
                </p>
                <Show when=move || error.get().is_some()>
                    <p class="error" role="alert" data-testid="error">
                        {move || error.get()}
                    </p>
                </Show>
                <Composer connected />
            </footer>
            <Show when=move || hydrated.get() && me.get().is_none()>
                <NameDialog />
            </Show>
        </div>
    }
}

#[component]
fn NameDialog() -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let input = NodeRef::<leptos::html::Input>::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(el) = input.get() else { return };
        let name: String = el.value().trim().chars().take(MAX_NAME_CHARS).collect();
        if name.is_empty() {
            return;
        }
        let user_id = browser::local_get(USER_KEY).unwrap_or_else(|| {
            let id = browser::random_id();
            browser::local_set(USER_KEY, &id);
            id
        });
        browser::local_set(NAME_KEY, &name);
        ctx.me.set(Some(Member {
            user_id,
            display_name: name,
        }));
    };
    Effect::new(move |_| {
        if let Some(el) = input.get() {
            let _ = el.focus();
        }
    });
    view! {
        <div class="backdrop">
            <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="name-title" on:submit=submit>
                <h2 id="name-title">"What should your teammates call you?"</h2>
                <label for="name-input">"Display name"</label>
                <input
                    id="name-input"
                    data-testid="name-input"
                    node_ref=input
                    maxlength=MAX_NAME_CHARS
                    required
                    autocomplete="nickname"
                />
                <button type="submit" data-testid="join">
                    "Join the room"
                </button>
            </form>
        </div>
    }
}

#[component]
fn Composer(connected: RwSignal<bool>) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let text = NodeRef::<leptos::html::Textarea>::new();
    let sending = RwSignal::new(false);
    let last_typing = StoredValue::new(0f64);
    let offline = move || ctx.me.get().is_some() && !connected.get();
    let send = move || {
        let Some(el) = text.get_untracked() else {
            return;
        };
        let value = el.value();
        if value.trim().is_empty() {
            ctx.error.set(Some("Type a message first.".into()));
            return;
        }
        if sending.get_untracked() || offline() {
            return;
        }
        let Some(me) = ctx.me.get_untracked() else {
            return;
        };
        sending.set(true);
        let ws = ctx.ws.get_value();
        spawn_local(async move {
            match prompt(ws, me.user_id, me.display_name, value).await {
                Ok(_) => {
                    el.set_value("");
                    ctx.error.set(None);
                }
                // The text stays in the box: nothing typed is lost.
                Err(e) => ctx.error.set(Some(e.message)),
            }
            sending.set(false);
        });
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        send();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let on_input = move |_| {
        let now = browser::now_ms();
        if now - last_typing.get_value() < 2500.0 {
            return;
        }
        last_typing.set_value(now);
        if let Some(me) = ctx.me.get_untracked() {
            let ws = ctx.ws.get_value();
            spawn_local(async move {
                let _ = typing(ws, me.user_id, me.display_name).await;
            });
        }
    };
    let action = format!("/w/{}/send", ctx.ws.get_value());
    view! {
        <form class="composer" method="post" action=action on:submit=on_submit>
            <Show when=move || ctx.me.get().is_none()>
                <label class="name-field">
                    "Your name "
                    <input name="displayName" maxlength=MAX_NAME_CHARS required data-testid="form-name" />
                </label>
            </Show>
            <label class="sr-only" for="composer-text">
                "Message"
            </label>
            <textarea
                id="composer-text"
                name="text"
                data-testid="composer"
                rows="2"
                maxlength=MAX_PROMPT_CHARS
                placeholder="Message the agent and your team…"
                aria-describedby="composer-hint"
                node_ref=text
                on:keydown=on_keydown
                on:input=on_input
            ></textarea>
            <button type="submit" data-testid="send" disabled=move || offline() || sending.get()>
                "Send"
            </button>
            <p id="composer-hint" class="hint">
                {move || {
                    if offline() {
                        "Disconnected: sending is paused until the room is back."
                    } else {
                        "Enter to send · Shift+Enter for a new line"
                    }
                }}
            </p>
        </form>
    }
}

#[component]
fn Clock(at: i64) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    view! { <time>{move || if ctx.hydrated.get() { browser::clock(at) } else { utc_clock(at) }}</time> }
}

#[component]
fn Row(item: Item) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let Item {
        key, at, view: row, ..
    } = item;
    match row {
        View::Chat {
            user_id,
            display_name,
            text,
        } => {
            let mine = move || {
                ctx.me
                    .with(|m| m.as_ref().is_some_and(|m| m.user_id == user_id))
            };
            view! {
                <article class="msg chat" class:mine=mine data-testid="chat">
                    <header>
                        <span class="author" data-testid="author">{display_name}</span>
                        <Clock at />
                    </header>
                    <p class="text">{text}</p>
                </article>
            }
            .into_any()
        }
        View::Agent { text, done } => {
            let html = move || ctx.rendered.with(|r| r.get(&key).cloned());
            view! {
                <article class="msg agent" class:streaming=!done data-testid="agent-message">
                    <header>
                        <span class="author">"Agent"</span>
                        <Clock at />
                    </header>
                    {move || match html() {
                        Some(html) if done => view! { <div class="markdown" inner_html=html></div> }.into_any(),
                        _ => view! { <p class="text">{text.clone()}</p> }.into_any(),
                    }}
                </article>
            }
            .into_any()
        }
        View::Thought { text } => view! {
            <details class="thought" data-testid="thought">
                <summary>"Thinking"</summary>
                <p class="text">{text}</p>
            </details>
        }
        .into_any(),
        View::Tool(tool) => view! { <ToolCard tool /> }.into_any(),
        View::Plan { entries } => view! {
            <section class="card plan" data-testid="plan" aria-label="Plan">
                <h3>"Plan"</h3>
                <ul>
                    {entries
                        .into_iter()
                        .map(|e| {
                            let mark = match e.status.as_str() {
                                "completed" => "☑",
                                "in_progress" => "◐",
                                _ => "☐",
                            };
                            view! {
                                <li class=e.status.clone() data-status=e.status>
                                    <span aria-hidden="true">{mark}</span>
                                    " "
                                    {e.content}
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </section>
        }
        .into_any(),
        View::Permission(p) => view! { <PermissionCard p /> }.into_any(),
        View::System { level, text } => {
            let class = match level {
                NoticeLevel::Info => "system info",
                NoticeLevel::Warning => "system warning",
                NoticeLevel::Error => "system error",
            };
            view! {
                <p class=class data-testid="system">
                    {text}
                </p>
            }
            .into_any()
        }
        View::Raw { label, json } => view! {
            <details class="raw" data-testid="raw">
                <summary>{label}</summary>
                <pre>{json}</pre>
            </details>
        }
        .into_any(),
    }
}

#[component]
fn ToolCard(tool: ToolView) -> impl IntoView {
    let ToolView {
        title,
        kind,
        status,
        diffs,
        text,
        ..
    } = tool;
    view! {
        <section class="card tool" data-testid="tool-call" data-status=status.clone()>
            <header>
                <h3>{title}</h3>
                <span class="badge">{kind}</span>
                <span class=format!("badge status-{status}")>{status.replace('_', " ")}</span>
            </header>
            {diffs.into_iter().map(|d| view! { <Diff d /> }).collect_view()}
            {text.into_iter().map(|t| view! { <pre class="tool-output">{t}</pre> }).collect_view()}
        </section>
    }
}

#[component]
fn Diff(d: DiffView) -> impl IntoView {
    let old: Vec<String> = d
        .old_text
        .as_deref()
        .map(|t| t.lines().map(|l| format!("- {l}")).collect())
        .unwrap_or_default();
    let new: Vec<String> = d.new_text.lines().map(|l| format!("+ {l}")).collect();
    view! {
        <div class="diff" data-testid="diff">
            <div class="path">{d.path}</div>
            <pre>
                {old.into_iter().map(|l| view! { <span class="del">{l} "\n"</span> }).collect_view()}
                {new.into_iter().map(|l| view! { <span class="add">{l} "\n"</span> }).collect_view()}
            </pre>
        </div>
    }
}

#[component]
fn PermissionCard(p: PermissionView) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let PermissionView {
        request_id,
        title,
        options,
        answered,
        cancelled,
    } = p;
    let body = match (answered, cancelled) {
        (Some((who, option)), _) => view! {
            <p class="resolved" data-testid="permission-resolved">
                {format!("{who} answered: {option}")}
            </p>
        }
        .into_any(),
        (None, true) => view! {
            <p class="resolved" data-testid="permission-resolved">
                "No longer needed: the request was cancelled."
            </p>
        }
        .into_any(),
        (None, false) => view! {
            <div class="options">
                {options
                    .into_iter()
                    .map(|(option_id, name)| {
                        let request_id = request_id.clone();
                        let on_click = move |_| {
                            let (request_id, option_id) = (request_id.clone(), option_id.clone());
                            ctx.act(move |ws, me| {
                                answer_permission(ws, me.user_id, Some(me.display_name), request_id, option_id)
                            });
                        };
                        view! {
                            <button type="button" data-testid="permission-option" on:click=on_click>
                                {name}
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        }
        .into_any(),
    };
    view! {
        <section class="card permission" data-testid="permission" aria-label="Permission request">
            <h3>"The agent asks: " {title}</h3>
            {body}
        </section>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Huddle · not found" />
        <main class="not-found">
            <h1>"Not found"</h1>
            <p>"There is nothing here. The link may be mistyped, or the workspace may not exist."</p>
            <a href="/">"Back to Huddle"</a>
        </main>
    }
}
