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
    ErrorCode, answer_permission, cancel, create_token, create_workspace, creator_invite, history,
    home, invite, mark_read as mark_read_api, members, prompt, remove_member, remove_queued,
    rename, rename_workspace, render_markdown, revoke_invite, revoke_token, room_page,
    rotate_invite, set_approver, set_approvers_only, set_option, set_role, typing,
};
use crate::browser;

mod sandbox;
mod threads;
use crate::model::{
    Access, HomeView, MAX_NAME_CHARS, MAX_PROMPT_CHARS, Me, Member, NoticeLevel, Role, RoomEntry,
    RoomEvent, RoomPage,
};
use crate::timeline::{self, DiffView, Item, LineKind, PermissionView, ToolView, View};

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
                <Route path=path!("/") view=HomePage ssr=SsrMode::Async />
                <Route path=path!("/w/:id") view=WorkspacePage ssr=SsrMode::Async />
                <Route path=path!("/w/:id/t/:thread") view=WorkspacePage ssr=SsrMode::Async />
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

/// A moment as `YYYY-MM-DD HH:MM UTC` (the server and the browser render the same text).
fn activity_label(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => String::new(),
    }
}

#[component]
fn HomePage() -> impl IntoView {
    let view = Resource::new(|| (), |_| home());
    view! {
        <main class="home">
            <h1>"Huddle"</h1>
            <p class="tagline">"One coding agent in a sandbox, and your whole team in the room with it."</p>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match view.await {
                        Ok(view) => view! { <Home view /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

#[component]
fn Home(view: HomeView) -> impl IntoView {
    let HomeView {
        me,
        workspaces,
        agents,
        projects_root,
    } = view;
    let name = RwSignal::new(me.display_name.clone());
    let error = RwSignal::new(None::<String>);
    let creator_link = RwSignal::new(None::<String>);
    let make_creator_link = move |_| {
        spawn_local(async move {
            match creator_invite().await {
                Ok(created) => creator_link.set(Some(created.url)),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let create = if me.may_create {
        view! { <CreateForm me=me.clone() agents projects_root error /> }.into_any()
    } else {
        view! {
            <p class="notice" data-testid="not-signed-in">
                "To create workspaces, open the sign-in link Huddle printed when it started (it is also in "
                <code>"<data dir>/sign-in-link"</code>
                "), or ask its owner for an invite. To join a workspace, open the invite link its owner gave you."
            </p>
        }
            .into_any()
    };
    let instance = me.instance_owner.then(|| {
        view! {
            <sandbox::SandboxHosts />
            <section class="instance" aria-labelledby="instance-title">
                <h2 id="instance-title">"Let others create workspaces"</h2>
                <p>"Whoever opens this link may create workspaces of their own (and owns them)."</p>
                <button type="button" class="secondary" data-testid="creator-invite" on:click=make_creator_link>
                    "Make an invite link"
                </button>
                <Show when=move || creator_link.get().is_some()>
                    <input class="link-out" readonly data-testid="creator-invite-url" prop:value=move || creator_link.get().unwrap_or_default() />
                </Show>
            </section>
        }
    });
    let has_workspaces = !workspaces.is_empty();
    view! {
        <NameTag name />
        {create}
        <Show when=move || error.get().is_some()>
            <p class="error" role="alert">
                {move || error.get()}
            </p>
        </Show>
        {instance}
        <Show when=move || has_workspaces>
            <section class="recent" aria-labelledby="recent-title">
                <h2 id="recent-title">"Your workspaces"</h2>
                <ul data-testid="my-workspaces">
                    {workspaces
                        .iter()
                        .map(|w| {
                            view! {
                                <li data-testid="my-workspace" data-status=w.status.clone()>
                                    <a href=crate::model::workspace_url(&w.workspace_id)>
                                        <strong>{w.name.clone()}</strong>
                                    </a>
                                    " · "
                                    {w.agent.clone()}
                                    " "
                                    <span class=format!("badge status-{}", w.status)>{w.status.clone()}</span>
                                    " "
                                    <span class="badge">{w.role.as_str()}</span>
                                    " "
                                    <time class="muted" data-ms=w.last_activity.to_string()>
                                        {activity_label(w.last_activity)}
                                    </time>
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </section>
        </Show>
    }
}

#[component]
fn CreateForm(
    me: Me,
    agents: Vec<crate::model::AgentChoice>,
    projects_root: bool,
    error: RwSignal<Option<String>>,
) -> impl IntoView {
    let navigate = use_navigate();
    let agent = NodeRef::<leptos::html::Select>::new();
    let directory = NodeRef::<leptos::html::Input>::new();
    let name = NodeRef::<leptos::html::Input>::new();
    let pending = RwSignal::new(false);
    // Without WASM the form posts to /new; once hydrated it calls the JSON API instead.
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let agent = agent.get().map(|s| s.value());
        let directory = directory
            .get()
            .map(|d| d.value())
            .filter(|d| !d.trim().is_empty());
        let name = name
            .get()
            .map(|n| n.value())
            .filter(|n| !n.trim().is_empty());
        let navigate = navigate.clone();
        pending.set(true);
        spawn_local(async move {
            match create_workspace(agent, directory, name).await {
                Ok(created) => navigate(&created.url, Default::default()),
                Err(e) => {
                    error.set(Some(e.message));
                    pending.set(false);
                }
            }
        });
    };
    let default = crate::model::default_agent(&agents).to_string();
    let options = agents
        .into_iter()
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
            let selected = a.id == default;
            view! {
                <option value=a.id selected=selected>
                    {label}
                </option>
            }
        })
        .collect_view();
    view! {
        <form class="create" method="post" action="/new" on:submit=on_submit>
            <input type="hidden" name="csrf" value=me.csrf />
            <label for="workspace-name">"Name (optional)"</label>
            <input
                id="workspace-name"
                name="name"
                data-testid="workspace-name-new"
                node_ref=name
                maxlength=crate::model::MAX_WORKSPACE_NAME_CHARS
                placeholder="named after its directory"
            />
            <label for="agent">"Agent"</label>
            <select id="agent" name="agent" node_ref=agent>
                {options}
            </select>
            {projects_root
                .then(|| {
                    view! {
                        <label for="directory">"Directory (optional, under the projects root)"</label>
                        <input id="directory" name="directory" data-testid="directory" node_ref=directory placeholder="a new one of its own" />
                    }
                })}
            <button type="submit" data-testid="new-workspace" disabled=move || pending.get()>
                "New workspace"
            </button>
        </form>
    }
}

/// The workspace's name in the room's header; its owner can change it.
#[component]
fn WorkspaceName(name: RwSignal<String>, id: String, is_owner: bool) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let editing = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(el) = input.get() else { return };
        let value = el.value();
        ctx.act(move |ws, _, _| async move {
            let renamed = rename_workspace(ws, value).await?;
            name.set(renamed.name);
            editing.set(false);
            Ok(())
        });
    };
    view! {
        <Show
            when=move || editing.get()
            fallback=move || {
                view! {
                    <h1>
                        <span data-testid="workspace-name">{move || name.get()}</span>
                        " "
                        <code class="workspace-id" data-testid="workspace-id">{id.clone()}</code>
                        {is_owner
                            .then(|| {
                                view! {
                                    " "
                                    <button type="button" class="link" data-testid="rename-workspace" on:click=move |_| editing.set(true)>
                                        "rename"
                                    </button>
                                }
                            })}
                    </h1>
                }
            }
        >
            <form class="rename" on:submit=save>
                <label class="sr-only" for="workspace-name-input">"Workspace name"</label>
                <input
                    id="workspace-name-input"
                    data-testid="workspace-name-input"
                    node_ref=input
                    maxlength=crate::model::MAX_WORKSPACE_NAME_CHARS
                    required
                    prop:value=move || name.get_untracked()
                />
                <button type="submit" data-testid="save-workspace-name">"Save"</button>
            </form>
        </Show>
    }
}

/// Who you are here, and a way to change your name (kept on the server).
#[component]
fn NameTag(name: RwSignal<String>) -> impl IntoView {
    let editing = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    let error = RwSignal::new(None::<String>);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(el) = input.get() else { return };
        let value = el.value();
        spawn_local(async move {
            match rename(value).await {
                Ok(me) => {
                    name.set(me.display_name);
                    editing.set(false);
                    error.set(None);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    Effect::new(move |_| {
        if editing.get()
            && let Some(el) = input.get()
        {
            let _ = el.focus();
        }
    });
    view! {
        <div class="name-tag" data-testid="me">
            <Show
                when=move || editing.get()
                fallback=move || {
                    view! {
                        "You are "
                        <strong data-testid="my-name">{move || name.get()}</strong>
                        " "
                        <button type="button" class="link" data-testid="rename" on:click=move |_| editing.set(true)>
                            "change"
                        </button>
                    }
                }
            >
                <form class="rename" on:submit=save>
                    <label class="sr-only" for="name-input">
                        "Display name"
                    </label>
                    <input
                        id="name-input"
                        data-testid="name-input"
                        node_ref=input
                        maxlength=MAX_NAME_CHARS
                        required
                        autocomplete="nickname"
                        prop:value=move || name.get_untracked()
                    />
                    <button type="submit" data-testid="save-name">
                        "Save"
                    </button>
                </form>
            </Show>
            <Show when=move || error.get().is_some()>
                <span class="error" role="alert">
                    {move || error.get()}
                </span>
            </Show>
        </div>
    }
}

#[component]
fn WorkspacePage() -> impl IntoView {
    let params = use_params_map();
    // The workspace's own URL opens its most recently active thread.
    let page = Resource::new(
        move || {
            let p = params.read();
            (p.get("id").unwrap_or_default(), p.get("thread"))
        },
        |(id, thread)| {
            let latest = thread.is_none();
            room_page(id, thread, latest)
        },
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading workspace…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(page) => {
                        let by_thread = params.read_untracked().get("thread").is_some();
                        view! { <Room page by_thread /> }.into_any()
                    }
                    Err(e) if e.code == ErrorCode::NotFound => view! { <NotFound /> }.into_any(),
                    Err(e) if matches!(e.code, ErrorCode::Forbidden | ErrorCode::Unauthorized) => {
                        view! { <NoAccess message=e.message /> }.into_any()
                    }
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

/// A workspace page for someone who is not in it.
#[component]
fn NoAccess(message: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::FORBIDDEN);
    }
    view! {
        <Title text="Huddle · ask for an invite" />
        <main class="not-found" data-testid="no-access">
            <h1>"Ask the owner for an invite"</h1>
            <p>{message}</p>
            <a href="/">"Back to Huddle"</a>
        </main>
    }
}

/// What the rows of a room share.
#[derive(Clone, Copy)]
struct RoomCtx {
    ws: StoredValue<String>,
    /// The thread shown.
    thread: StoredValue<String>,
    /// Whether the page's URL names the thread.
    by_thread: bool,
    me: RwSignal<Option<Member>>,
    rendered: RwSignal<HashMap<String, String>>,
    error: RwSignal<Option<String>>,
    hydrated: RwSignal<bool>,
    /// What the visitor may do here (the server checks every action again).
    access: Access,
    csrf: StoredValue<String>,
}

impl RoomCtx {
    /// Runs an action as the current user; its error is shown to them.
    fn act<F, Fut>(self, f: F)
    where
        F: FnOnce(String, Option<String>, Member) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), crate::api::ApiError>> + 'static,
    {
        let Some(me) = self.me.get_untracked() else {
            return;
        };
        let ws = self.ws.get_value();
        let thread = Some(self.thread.get_value());
        let error = self.error;
        spawn_local(async move {
            match f(ws, thread, me).await {
                Ok(()) => error.set(None),
                Err(e) => error.set(Some(e.message)),
            }
        });
    }
}

#[component]
fn Room(
    page: RoomPage,
    /// Opened by the thread's own URL (not the workspace's): a no-JS post comes back to it.
    by_thread: bool,
) -> impl IntoView {
    let RoomPage {
        me: who,
        access,
        info,
        fold: initial,
        head: initial_head,
        rendered: initial_html,
        older: initial_older,
        threads: thread_list,
    } = page;
    let hydrated = hydrated();
    let who_is_instance_owner = who.instance_owner;
    let ctx = RoomCtx {
        ws: StoredValue::new(info.workspace_id.clone()),
        thread: StoredValue::new(info.thread_id.clone()),
        by_thread,
        me: RwSignal::new(Some(Member {
            user_id: who.person_id.clone(),
            display_name: who.display_name.clone(),
            role: Some(access.role),
        })),
        rendered: RwSignal::new(initial_html.into_iter().collect()),
        error: RwSignal::new(None),
        hydrated,
        access,
        csrf: StoredValue::new(who.csrf.clone()),
    };
    provide_context(ctx);
    let thread_state = threads::ThreadsState::new(info.workspace_id.clone(), thread_list);
    let threads_open = RwSignal::new(false);
    let RoomCtx {
        ws,
        me,
        rendered,
        error,
        ..
    } = ctx;
    // Each streamed entry is applied to the fold; only the rows it changes are touched, each
    // through its own signal, so a long room costs no more per chunk than a short one, and an
    // open "Thinking" or raw row stays open.
    let rows = RwSignal::new(
        initial
            .items()
            .iter()
            .map(|i| RowSlot::new(i.clone()))
            .collect::<Vec<_>>(),
    );
    let running_now = RwSignal::new(initial.running().cloned());
    let queue_now = RwSignal::new(initial.queue().to_vec());
    let facts_now = RwSignal::new(initial.session().clone());
    // The permission request the agent waits on, if any: the dock says so wherever one scrolled.
    let asking = RwSignal::new(initial.open_question().map(str::to_string));
    // The workspace's name: as the page says, then as the owner renames it, live.
    let room_name = RwSignal::new(info.name.clone());
    let fold = StoredValue::new(initial);
    // Older history, paged in (newest last) as people scroll up; it no longer changes.
    let older = RwSignal::new(initial_older);
    let older_rows = RwSignal::new(Vec::<Item>::new());
    let loading_older = RwSignal::new(false);
    let load_older = move || {
        let before = older.get_untracked();
        if before == 0 || loading_older.get_untracked() {
            return;
        }
        loading_older.set(true);
        let ws = ctx.ws.get_value();
        let thread = Some(ctx.thread.get_value());
        spawn_local(async move {
            match history(ws, thread, before).await {
                Ok(page) => {
                    let height = browser::scroll_height();
                    rendered.update(|r| r.extend(page.rendered));
                    older_rows.update(|rows| {
                        let mut items = page.items;
                        items.append(rows);
                        *rows = items;
                    });
                    older.set(page.start);
                    // What was on screen stays there: the new rows go above it.
                    request_animation_frame(move || {
                        browser::scroll_by(browser::scroll_height() - height)
                    });
                }
                Err(e) => error.set(Some(e.message)),
            }
            loading_older.set(false);
        });
    };
    Effect::new(move |_| {
        browser::scroll_to_bottom();
        browser::on_scroll_near_top(load_older);
    });
    let head = StoredValue::new(initial_head);
    // The dock changes when the turn or the queue does, not on every streamed chunk (so its
    // buttons stay put under the pointer).
    let running = Memo::new(move |_| running_now.get());
    let facts = Memo::new(move |_| facts_now.get());
    let commands = Memo::new(move |_| facts.with(|f| f.commands.clone()));
    let queue = Memo::new(move |_| queue_now.get());
    // Finished markdown is rendered (and sanitised) on the server, once per row.
    let asked = StoredValue::new(HashSet::<String>::new());
    let render_finished = move |item: &Item| {
        for (key, text) in timeline::finished_markdown(item) {
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
    };
    let apply = move |entry: &RoomEntry| {
        let changed = fold
            .try_update_value(|f| f.apply(entry))
            .unwrap_or_default();
        let len = rows.with_untracked(|r| r.len());
        let mut added = Vec::new();
        fold.with_value(|f| {
            for i in changed {
                let item = f.items()[i].clone();
                render_finished(&item);
                if i < len {
                    rows.with_untracked(|r| r[i].item.set(item));
                } else {
                    added.push(RowSlot::new(item));
                }
            }
            if running_now.with_untracked(|r| r.as_ref() != f.running()) {
                running_now.set(f.running().cloned());
            }
            if queue_now.with_untracked(|q| q.as_slice() != f.queue()) {
                queue_now.set(f.queue().to_vec());
            }
            if facts_now.with_untracked(|s| s != f.session()) {
                facts_now.set(f.session().clone());
            }
            if asking.with_untracked(|a| a.as_deref() != f.open_question()) {
                asking.set(f.open_question().map(str::to_string));
            }
            if let Some(n) = f.name()
                && room_name.with_untracked(|r| r != n)
            {
                room_name.set(n.to_string());
            }
        });
        if !added.is_empty() {
            rows.update(|r| r.extend(added));
        }
    };
    // How far this person has read the thread, kept on the server (at most once a second).
    let read_at = StoredValue::new(0i64);
    let marking = StoredValue::new(false);
    let mark_read = move || {
        if browser::page_hidden() || marking.get_value() || head.get_value() <= read_at.get_value()
        {
            return;
        }
        marking.set_value(true);
        // The first mark at once (the person may move on quickly), later ones a second apart.
        let delay = if read_at.get_value() == 0 { 0 } else { 1000 };
        set_timeout(
            move || {
                let (Some(seq), Some(ws), Some(thread)) = (
                    head.try_get_value(),
                    ctx.ws.try_get_value(),
                    ctx.thread.try_get_value(),
                ) else {
                    return;
                };
                spawn_local(async move {
                    if mark_read_api(ws, Some(thread), seq).await.is_ok() {
                        read_at.try_set_value(seq);
                    }
                    marking.try_set_value(false);
                });
            },
            std::time::Duration::from_millis(delay),
        );
    };
    Effect::new(move |_| mark_read());
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

    // Your name is kept on the server; a change shows on your own messages from now on.
    let name = RwSignal::new(who.display_name.clone());
    Effect::new(move |_| {
        let n = name.get();
        me.update(|m| {
            if let Some(m) = m {
                m.display_name = n;
            }
        });
    });
    Effect::new(move |_| {
        browser::every(1000, move || {
            now.set(browser::now_ms());
            typists.update(|t| t.retain(|(_, until)| *until > browser::now_ms()));
        });
        browser::on_visibility_change(move |hidden| {
            if !hidden {
                unread.set(0);
                mark_read();
            }
        });
    });

    // The live stream, once we know who is watching. The effect owns it (and closes it when the room
    // goes away): effects run only in the browser, so no server thread ever touches it.
    Effect::new(move |open: Option<Option<browser::RoomStream>>| {
        if let Some(Some(stream)) = open {
            return Some(stream);
        }
        let my_id = me.with_untracked(|m| m.as_ref().map(|m| m.user_id.clone()))?;
        let url = format!(
            "/api/workspace/{}/events?threadId={}",
            ws.get_value(),
            ctx.thread.get_value()
        );
        let callbacks = browser::RoomCallbacks {
            on_entry: Box::new(move |data| {
                let Ok(entry) = serde_json::from_str::<RoomEntry>(&data) else {
                    return;
                };
                if entry.seq <= head.get_value() {
                    return; // Already here: a resumed stream never doubles an entry.
                }
                head.set_value(entry.seq);
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
                apply(&entry);
                mark_read();
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
            on_thread: Box::new(move |data| {
                if let Ok(pulse) = serde_json::from_str::<crate::model::ThreadPulse>(&data) {
                    thread_state.pulse(pulse);
                }
            }),
            // The whole log follows: start from nothing rather than keep what it no longer has.
            on_reset: Box::new(move || {
                fold.set_value(timeline::Fold::default());
                head.set_value(0);
                rows.set(Vec::new());
                running_now.set(None);
                queue_now.set(Vec::new());
                facts_now.set(Default::default());
            }),
            on_status: Box::new(move |up| {
                connected.set(up);
                if up {
                    ever_connected.set(true);
                }
            }),
            last_seq: Box::new(move || head.get_value()),
        };
        Some(browser::RoomStream::open(url, callbacks))
    });

    // The server renders the plain title; the unread count is the browser's business (a reactive
    // <Title> is read by leptos_meta after the page's reactive arena is gone, and panics).
    let title = format!("{} · Huddle", info.name);
    Effect::new(move |_| {
        let title = format!("{} · Huddle", room_name.get());
        browser::set_title(&match unread.get() {
            0 => title,
            n => format!("({n}) {title}"),
        })
    });
    let managing = RwSignal::new(false);
    let my_id = StoredValue::new(who.person_id.clone());
    let can_act = access.role.can_act();
    let is_owner = access.role == Role::Owner;
    let instance_owner = who_is_instance_owner;
    let room_sandbox = info.sandbox.clone();
    let stop = move |_| ctx.act(|ws, th, _| cancel(ws, th, false));
    let stop_and_clear = move |_| ctx.act(|ws, th, _| cancel(ws, th, true));
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
    let export_md = format!(
        "/api/workspace/{}/threads/{}/export.md",
        info.workspace_id, info.thread_id
    );
    let export_jsonl = format!(
        "/api/workspace/{}/threads/{}/export.jsonl",
        info.workspace_id, info.thread_id
    );
    let id_attr = info.workspace_id.clone();
    view! {
        <Title text=title />
        <threads::ThreadListPanel
            state=thread_state
            current=info.thread_id.clone()
            can_act
            open=threads_open
        />
        <div class="room with-threads" data-workspace-id=id_attr data-thread-id=info.thread_id.clone()>
            <header class="room-header">
                <a class="brand" href="/">
                    "Huddle"
                </a>
                <button
                    type="button"
                    class="secondary threads-toggle"
                    data-testid="threads-toggle"
                    aria-expanded=move || threads_open.get().to_string()
                    on:click=move |_| threads_open.update(|o| *o = !*o)
                >
                    "Threads"
                </button>
                <div class="room-title">
                    <WorkspaceName name=room_name id=id_for_header is_owner />
                    <p class="session-facts">
                        {move || {
                            facts
                                .with(|f| f.title.clone())
                                .map(|t| view! { <strong data-testid="session-title">{t}</strong> })
                        }}
                        {move || {
                            facts
                                .with(|f| f.usage.as_ref().map(|u| (u.label(), u.used, u.size)))
                                .map(|(label, used, size)| {
                                    view! {
                                        <span class="usage" data-testid="usage">
                                            {used
                                                .map(|used| {
                                                    view! {
                                                        <meter
                                                            min="0"
                                                            max=size.to_string()
                                                            value=used.to_string()
                                                        ></meter>
                                                    }
                                                })}
                                            " "
                                            {label}
                                        </span>
                                    }
                                })
                        }}
                    </p>
                    <p class="room-facts">
                        "Agent "
                        <strong data-testid="agent">{agent.clone()}</strong>
                        <sandbox::SandboxFacts sandbox=info.sandbox.clone() />
                        {(!info.working_dir.is_empty())
                            .then(|| {
                                view! {
                                    " · in "
                                    <code class="working-dir" data-testid="working-dir" title=info.working_dir.clone()>
                                        {info.working_dir.clone()}
                                    </code>
                                }
                            })}
                        " · you are "
                        <span class="badge" data-testid="my-role">{access.role.as_str()}</span>
                        " · export "
                        <a href=export_md download data-testid="export-md">"Markdown"</a>
                        " "
                        <a href=export_jsonl download data-testid="export-jsonl">"JSONL"</a>
                    </p>
                </div>
                <div class="room-tools">
                    <ul class="online" aria-label="Online" data-testid="online">
                        <For
                            each=move || online.get()
                            key=|m| m.user_id.clone()
                            children=move |m| {
                                let initial = m.display_name.chars().next().unwrap_or('?').to_uppercase().to_string();
                                let role = m.role.map(|r| r.as_str()).unwrap_or_default();
                                view! {
                                    <li title=format!("{} ({role})", m.display_name) data-role=role>
                                        <span class="avatar" aria-hidden="true">
                                            {initial}
                                        </span>
                                        <span class="name">{m.display_name.clone()}</span>
                                        <span class="role">{role}</span>
                                    </li>
                                }
                            }
                        />
                    </ul>
                    <NameTag name />
                    {is_owner
                        .then(|| {
                            view! {
                                <button
                                    type="button"
                                    class="secondary"
                                    data-testid="manage"
                                    aria-expanded=move || managing.get().to_string()
                                    on:click=move |_| managing.update(|m| *m = !*m)
                                >
                                    "People & invites"
                                </button>
                            }
                        })}
                </div>
            </header>
            <Show when=move || managing.get()>
                <ManagePanel name=room_name instance_owner sandbox=room_sandbox.clone() />
            </Show>
            <Show when=move || hydrated.get() && !connected.get()>
                <div class="banner" role="status" data-testid="reconnecting">
                    {move || if ever_connected.get() { "Reconnecting to the room…" } else { "Connecting to the room…" }}
                </div>
            </Show>
            <p class="sr-only" aria-live="polite">
                {move || announce.get()}
            </p>
            <main class="timeline" data-testid="timeline">
                <Show when=move || { older.get() != 0 }>
                    <button
                        type="button"
                        class="secondary older"
                        data-testid="older"
                        disabled=move || loading_older.get()
                        on:click=move |_| load_older()
                    >
                        "Show earlier messages"
                    </button>
                </Show>
                <For
                    each=move || older_rows.get()
                    key=|item| item.key.clone()
                    children=move |item| view! { <Row item /> }
                />
                <Show when=move || rows.with(|r| r.is_empty()) && older.get() == 0>
                    <p class="empty">"Nothing here yet. Say hello to the agent below."</p>
                </Show>
                <For
                    each=move || rows.get()
                    key=|row| row.key.clone()
                    children=move |row| view! { <LiveRow item=row.item /> }
                />
            </main>
            <footer class="dock">
                {move || {
                    running
                        .get()
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
                                    <Show when=move || can_act>
                                    <button type="button" class="danger" data-testid="stop" on:click=stop>
                                        "Stop"
                                    </button>
                                    </Show>
                                    <Show when=move || can_act && queue.with(|q| !q.is_empty())>
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
                <Show when=move || asking.with(Option::is_some)>
                    <button
                        type="button"
                        class="asking"
                        data-testid="waiting-for-answer"
                        on:click=move |_| {
                            if let Some(key) = asking.get_untracked() {
                                browser::reveal(&format!("row-{key}"));
                            }
                        }
                    >
                        "The agent is waiting for an answer · show the question"
                    </button>
                </Show>
                <Show when=move || queue.with(|q| !q.is_empty())>
                    <div class="queue" data-testid="queue">
                        <h2>"Up next"</h2>
                        <ol>
                            <For
                                each=move || queue.get()
                                key=|w| w.seq
                                children=move |w| {
                                    let removable = is_owner || my_id.with_value(|id| w.mine(id));
                                    let seq = w.seq;
                                    view! {
                                        <li>
                                            <span class="author">{w.display_name}</span>
                                            ": "
                                            <span class="text">{w.text}</span>
                                            {removable
                                                .then(|| {
                                                    view! {
                                                        " "
                                                        <button
                                                            type="button"
                                                            class="link"
                                                            data-testid="remove-queued"
                                                            on:click=move |_| ctx.act(move |ws, th, _| remove_queued(ws, th, seq))
                                                        >
                                                            "Remove"
                                                        </button>
                                                    }
                                                })}
                                        </li>
                                    }
                                }
                            />
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
                <SessionOptions facts can_act />
                {if can_act {
                    view! { <Composer connected commands /> }.into_any()
                } else {
                    view! {
                        <p class="viewer-note" data-testid="viewer-note">
                            "You are watching as a viewer: you see everything live, and the owner can make you a member."
                        </p>
                    }
                        .into_any()
                }}
            </footer>
        </div>
    }
}

#[component]
fn Composer(
    connected: RwSignal<bool>,
    commands: Memo<Vec<timeline::CommandView>>,
) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let text = NodeRef::<leptos::html::Textarea>::new();
    // The slash-command palette: what is typed while it is a bare `/word`; ↑ ↓ choose, Enter or
    // Tab takes the chosen command, Esc closes it until the word changes.
    let draft = RwSignal::new(String::new());
    let chosen = RwSignal::new(0usize);
    let dismissed = RwSignal::new(None::<String>);
    let matching = move || {
        let d = draft.get();
        if !d.starts_with('/')
            || d.contains(char::is_whitespace)
            || dismissed.with(|x| x.as_ref() == Some(&d))
        {
            return Vec::new();
        }
        commands.with(|c| {
            c.iter()
                .filter(|c| c.name.starts_with(&d[1..]))
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let pick = move |name: String| {
        if let Some(el) = text.get_untracked() {
            let value = format!("/{name} ");
            el.set_value(&value);
            draft.set(value);
            let _ = el.focus();
        }
    };
    let team_only = NodeRef::<leptos::html::Input>::new();
    let sending = RwSignal::new(false);
    // Images pasted or dropped into the composer: (type, base64), sent with the next message.
    let attachments = RwSignal::new(Vec::<(String, String)>::new());
    let on_image = std::rc::Rc::new(move |got: Result<(String, String), String>| match got {
        Ok(image) => {
            if attachments.with_untracked(|a| a.len()) >= crate::model::MAX_IMAGES {
                ctx.error.set(Some(format!(
                    "A message carries at most {} images.",
                    crate::model::MAX_IMAGES
                )));
            } else {
                attachments.update(|a| a.push(image));
            }
        }
        Err(why) => ctx.error.set(Some(why)),
    }) as browser::OnImage;
    let on_paste = {
        let on_image = on_image.clone();
        move |ev: leptos::ev::ClipboardEvent| {
            if browser::read_images(&ev, on_image.clone()) {
                ev.prevent_default();
            }
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        browser::read_images(&ev, on_image.clone());
    };
    let last_typing = StoredValue::new(0f64);
    // Before hydration (or without WebAssembly) the form posts by itself: never "offline".
    let offline = move || ctx.hydrated.get() && !connected.get();
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
        sending.set(true);
        let ws = ctx.ws.get_value();
        let thread = Some(ctx.thread.get_value());
        spawn_local(async move {
            let team = team_only.get_untracked().is_some_and(|t| t.checked());
            let images = attachments
                .get_untracked()
                .into_iter()
                .map(|(mime_type, data)| crate::model::ImageUpload { mime_type, data })
                .collect();
            match prompt(ws, thread, value, team, images).await {
                Ok(_) => {
                    el.set_value("");
                    attachments.set(Vec::new());
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
        let open = matching();
        if !open.is_empty() && !ev.is_composing() {
            let n = open.len();
            let at = chosen.get_untracked().min(n - 1);
            let step = match ev.key().as_str() {
                "ArrowDown" => Some((at + 1) % n),
                "ArrowUp" => Some((at + n - 1) % n),
                _ => None,
            };
            if let Some(next) = step {
                ev.prevent_default();
                chosen.set(next);
                browser::reveal(&format!("command-{next}"));
                return;
            }
            match ev.key().as_str() {
                "Enter" | "Tab" if !ev.shift_key() => {
                    ev.prevent_default();
                    pick(open[at].name.clone());
                    return;
                }
                "Escape" => {
                    ev.prevent_default();
                    dismissed.set(Some(draft.get_untracked()));
                    return;
                }
                _ => {}
            }
        }
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let on_input = move |ev: leptos::ev::Event| {
        draft.set(event_target_value(&ev));
        chosen.set(0);
        let now = browser::now_ms();
        if now - last_typing.get_value() < 2500.0 {
            return;
        }
        last_typing.set_value(now);
        let ws = ctx.ws.get_value();
        let thread = Some(ctx.thread.get_value());
        spawn_local(async move {
            let _ = typing(ws, thread).await;
        });
    };
    let action = format!("/w/{}/send", ctx.ws.get_value());
    view! {
        <form
            class="composer"
            method="post"
            action=action
            on:submit=on_submit
            on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default()
            on:drop=on_drop
        >
            <input type="hidden" name="csrf" value=ctx.csrf.get_value() />
            <input type="hidden" name="thread" value=ctx.thread.get_value() />
            <input type="hidden" name="back" value=if ctx.by_thread { "thread" } else { "workspace" } />
            <label class="team-only-toggle" title="The agent does not get it as a prompt; it sees it as context with the next one">
                <input type="checkbox" name="team_only" data-testid="team-only" node_ref=team_only />
                " Team only"
            </label>
            <Show when=move || !matching().is_empty()>
                <ul class="palette" data-testid="palette" role="listbox" aria-label="Slash commands">
                    {move || {
                        matching()
                            .into_iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let name = c.name.clone();
                                let active = move || chosen.get() == i;
                                view! {
                                    <li id=format!("command-{i}") role="option" aria-selected=move || active().to_string()>
                                        <button
                                            type="button"
                                            class="command"
                                            class:active=active
                                            tabindex="-1"
                                            data-testid="command"
                                            on:click=move |_| pick(name.clone())
                                        >
                                            <code>{format!("/{}", c.name)}</code>
                                            " "
                                            <span class="description">{c.description.clone()}</span>
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
            </Show>
            <Show when=move || attachments.with(|a| !a.is_empty())>
                <ul class="attachments pending" data-testid="attachments">
                    {move || {
                        attachments
                            .get()
                            .into_iter()
                            .enumerate()
                            .map(|(i, (mime, data))| {
                                view! {
                                    <li>
                                        <img class="attachment" src=format!("data:{mime};base64,{data}") alt="An image to send" />
                                        <button
                                            type="button"
                                            class="link"
                                            aria-label="Remove this image"
                                            on:click=move |_| attachments.update(|a| { a.remove(i); })
                                        >
                                            "×"
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
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
                on:paste=on_paste
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

/// The agent's session options (its mode, its model), shared by the room: members change them.
#[component]
fn SessionOptions(facts: Memo<timeline::SessionFacts>, can_act: bool) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    view! {
        <Show when=move || facts.with(|f| !f.options.is_empty())>
            <div class="session-options" data-testid="session-options">
                <For
                    each=move || facts.get().options
                    key=|o| (o.id.clone(), o.current.clone(), o.choices.len())
                    children=move |o| {
                        let id = o.id.clone();
                        let on_change = move |ev: leptos::ev::Event| {
                            let (config_id, value) = (id.clone(), event_target_value(&ev));
                            ctx.act(move |ws, th, _| set_option(ws, th, config_id, value));
                        };
                        let current = o.current.clone();
                        view! {
                            <label>
                                {o.name.clone()}
                                " "
                                <select
                                    data-testid=format!("option-{}", o.id)
                                    disabled=!can_act
                                    on:change=on_change
                                >
                                    {o
                                        .choices
                                        .into_iter()
                                        .map(|(value, name)| {
                                            let selected = value == current;
                                            view! {
                                                <option value=value selected=selected>
                                                    {name}
                                                </option>
                                            }
                                        })
                                        .collect_view()}
                                </select>
                            </label>
                        }
                    }
                />
            </div>
        </Show>
    }
}

#[component]
fn Clock(at: i64) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    view! { <time>{move || if ctx.hydrated.get() { browser::clock(at) } else { utc_clock(at) }}</time> }
}

/// A row of the timeline and the signal that updates it in place.
#[derive(Clone)]
struct RowSlot {
    key: String,
    item: RwSignal<Item>,
}

impl RowSlot {
    fn new(item: Item) -> Self {
        RowSlot {
            key: item.key.clone(),
            item: RwSignal::new(item),
        }
    }
}

/// A row that follows its item. Thoughts keep their element (and so stay open) while they grow;
/// other rows are drawn again when their item changes, which costs that row only.
#[component]
fn LiveRow(item: RwSignal<Item>) -> impl IntoView {
    if item.with_untracked(|i| matches!(i.view, View::Thought { .. })) {
        let text = move || {
            item.with(|i| match &i.view {
                View::Thought { text } => text.clone(),
                _ => String::new(),
            })
        };
        return view! {
            <details class="thought" data-testid="thought">
                <summary>"Thinking"</summary>
                <p class="text">{text}</p>
            </details>
        }
        .into_any();
    }
    (move || view! { <Row item=item.get() /> }).into_any()
}

#[component]
fn Row(item: Item) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let Item {
        key,
        at,
        rev,
        view: row,
    } = item;
    let can_fork = ctx.access.role.can_act();
    match row {
        View::Chat {
            user_id,
            display_name,
            text,
            team_only,
            images,
        } => {
            let mine = move || {
                ctx.me
                    .with(|m| m.as_ref().is_some_and(|m| m.user_id == user_id))
            };
            view! {
                <article class="msg chat" class:mine=mine class:team-only=team_only data-testid="chat">
                    <header>
                        <span class="author" data-testid="author">{display_name}</span>
                        <Clock at />
                        {can_fork.then(|| view! { <threads::ForkButton seq=rev /> })}
                        {team_only
                            .then(|| {
                                view! {
                                    <span class="badge" data-testid="team-only-badge" title="Not a prompt: the agent sees it with the next one">
                                        "team only"
                                    </span>
                                }
                            })}
                    </header>
                    <p class="text">{text}</p>
                    {(!images.is_empty())
                        .then(|| {
                            let ws = ctx.ws.get_value();
                            view! {
                                <div class="attachments">
                                    {images
                                        .into_iter()
                                        .map(|i| {
                                            view! {
                                                <a href=crate::model::image_url(&ws, &i.id) target="_blank" rel="noopener">
                                                    <img
                                                        class="attachment"
                                                        data-testid="chat-image"
                                                        src=crate::model::image_url(&ws, &i.id)
                                                        alt="An image sent with the message"
                                                    />
                                                </a>
                                            }
                                        })
                                        .collect_view()}
                                </div>
                            }
                        })}
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
                        {(can_fork && done).then(|| view! { <threads::ForkButton seq=rev /> })}
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
        View::Tool(tool) => view! { <ToolCard tool key=key.clone() /> }.into_any(),
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
        View::Permission(p) => view! { <PermissionCard p key=key /> }.into_any(),
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

/// A row's texts as markdown, once the server has rendered them (they are keyed by row and
/// position); until then, and if rendering fails, as they came.
fn rendered_texts(
    ctx: RoomCtx,
    key: &str,
    texts: Vec<String>,
    class: &'static str,
) -> impl IntoView + use<> {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let k = ToolView::text_key(key, i);
            let html = move || ctx.rendered.with(|r| r.get(&k).cloned());
            view! {
                {move || match html() {
                    Some(html) => view! { <div class=format!("markdown {class}") inner_html=html></div> }.into_any(),
                    None => view! { <pre class="tool-output">{t.clone()}</pre> }.into_any(),
                }}
            }
        })
        .collect_view()
}

#[component]
fn ToolCard(tool: ToolView, key: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let ToolView {
        title,
        kind,
        status,
        diffs,
        text,
        terminal,
        ..
    } = tool;
    // Finished calls' text is rendered as markdown once (Claude fences command output); until
    // then, and if rendering fails, it shows as it came.
    let texts = rendered_texts(ctx, &key, text, "tool-text");
    // A terminal that has shown nothing yet (a call waiting for permission) takes no room.
    let terminal = terminal.filter(|t| !t.output.is_empty() || t.exit.is_some()).map(|t| {
        view! {
            <div class="terminal" data-testid="terminal">
                {(!t.output.is_empty()).then(|| view! { <pre>{t.output}</pre> })}
                {t.exit.map(|e| view! { <p class="terminal-exit" data-testid="terminal-exit">{e}</p> })}
            </div>
        }
    });
    view! {
        <section class="card tool" data-testid="tool-call" data-status=status.clone()>
            <header>
                <h3>{title}</h3>
                <span class="badge">{kind}</span>
                <span class=format!("badge status-{status}")>{status.replace('_', " ")}</span>
            </header>
            {diffs.into_iter().map(|d| view! { <Diff d /> }).collect_view()}
            {terminal}
            {texts}
        </section>
    }
}

#[component]
fn Diff(d: DiffView) -> impl IntoView {
    let (added, removed) = d.counts();
    let hunks = d.hunks.into_iter().map(|hunk| {
        let lines = hunk.lines.into_iter().map(|l| {
            let (class, sign) = match l.kind {
                LineKind::Context => ("ctx", " "),
                LineKind::Removed => ("del", "-"),
                LineKind::Added => ("add", "+"),
            };
            view! {
                <tr class=class data-testid="diff-line">
                    <td class="ln">{l.old}</td>
                    <td class="ln">{l.new}</td>
                    <td class="code">{sign} " " {l.text}</td>
                </tr>
            }
        });
        view! { <tbody class="hunk">{lines.collect_view()}</tbody> }
    });
    view! {
        <div class="diff" data-testid="diff">
            <div class="path">
                {d.path}
                {d.created.then_some(" (new file)")}
                <span class="diff-counts">
                    <span class="add">"+" {added}</span> " " <span class="del">"−" {removed}</span>
                </span>
            </div>
            <div class="diff-body">
                <table class="diff-lines">{hunks.collect_view()}</table>
            </div>
        </div>
    }
}

#[component]
fn PermissionCard(p: PermissionView, key: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let PermissionView {
        request_id,
        title,
        tool_kind,
        text,
        options,
        answered,
        cancelled,
    } = p;
    // Leaving plan mode is a change of mode, not a standing rule: no "always" on its choices.
    let switch_mode = tool_kind == "switch_mode";
    let anchor = format!("row-{key}");
    let texts = rendered_texts(ctx, &key, text, "permission-text");
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
        (None, false) if !ctx.access.may_approve => view! {
            <p class="resolved" data-testid="permission-waiting">
                {format!(
                    "Waiting for {} to answer ({}).",
                    if ctx.access.role == Role::Viewer { "a member" } else { "an approver" },
                    options.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(" / "),
                )}
            </p>
        }
        .into_any(),
        (None, false) => view! {
            <div class="options">
                {options
                    .into_iter()
                    .map(|o| {
                        let request_id = request_id.clone();
                        let option_id = o.id.clone();
                        let on_click = move |_| {
                            let (request_id, option_id) = (request_id.clone(), option_id.clone());
                            ctx.act(move |ws, th, _| answer_permission(ws, th, request_id, option_id));
                        };
                        // Allow once, allow always and reject look different: an "always" is a
                        // standing rule for the whole session.
                        let (class, note) = match o.kind.as_str() {
                            "allow_always" if switch_mode => ("allow", None),
                            "allow_always" => ("allow always", Some("always")),
                            "allow_once" => ("allow", None),
                            "reject_always" => ("reject always", Some("always")),
                            "reject_once" => ("reject", None),
                            _ => ("", None),
                        };
                        view! {
                            <button
                                type="button"
                                class=format!("choice {class}")
                                data-kind=o.kind.clone()
                                data-testid="permission-option"
                                on:click=on_click
                            >
                                {o.name.clone()}
                                {note.map(|n| view! { " " <span class="kind">{n}</span> })}
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        }
        .into_any(),
    };
    view! {
        <section
            id=anchor
            class=if switch_mode { "card permission switch-mode" } else { "card permission" }
            data-testid="permission"
            data-kind=tool_kind
            aria-label="Permission request"
        >
            <h3>
                {if switch_mode { "The agent asks to leave plan mode: " } else { "The agent asks: " }}
                {title}
            </h3>
            {texts}
            {body}
        </section>
    }
}

/// The owner's tools: invite links, people and their roles, approvers, API tokens; deleting the
/// workspace, and (for the instance owner) moving it to another sandbox host.
#[component]
fn ManagePanel(
    name: RwSignal<String>,
    instance_owner: bool,
    sandbox: crate::model::SandboxSummary,
) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let version = RwSignal::new(0u32);
    let data = LocalResource::new(move || {
        version.track();
        members(ctx.ws.get_value())
    });
    let error = RwSignal::new(None::<String>);
    let link = RwSignal::new(None::<(String, String)>);
    let token = RwSignal::new(None::<String>);
    let token_name = NodeRef::<leptos::html::Input>::new();
    let token_role = NodeRef::<leptos::html::Select>::new();
    // Runs an owner action, then shows the lists as they are now.
    let run = move |f: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), crate::api::ApiError>>>,
    >| {
        spawn_local(async move {
            match f.await {
                Ok(()) => error.set(None),
                Err(e) => error.set(Some(e.message)),
            }
            version.update(|v| *v += 1);
        });
    };
    let new_link = move |role: &'static str| {
        let ws = ctx.ws.get_value();
        run(Box::pin(async move {
            let created = invite(ws, role.to_string()).await?;
            link.set(Some((role.to_string(), created.url)));
            Ok(())
        }));
    };
    let new_token = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let ws = ctx.ws.get_value();
        let name = token_name.get().map(|i| i.value()).unwrap_or_default();
        let role = token_role.get().map(|s| s.value());
        run(Box::pin(async move {
            let created = create_token(ws, name, role).await?;
            token.set(Some(created.token));
            Ok(())
        }));
    };
    view! {
        <section class="manage" data-testid="manage-panel" aria-label="People and invites">
            <div class="manage-block">
                <h2>"Invite links"</h2>
                <p>"Anyone who opens a link joins with its role. Revoke a link, and it admits nobody new."</p>
                <button type="button" data-testid="invite-member" on:click=move |_| new_link("member")>
                    "New member link"
                </button>
                " "
                <button type="button" class="secondary" data-testid="invite-viewer" on:click=move |_| new_link("viewer")>
                    "New viewer link"
                </button>
                {move || {
                    link.get()
                        .map(|(role, url)| {
                            view! {
                                <p class="link-out">
                                    {format!("New {role} link: ")}
                                    <input readonly data-testid="invite-url" data-role=role prop:value=url.clone() />
                                    <button type="button" class="link" on:click=move |_| browser::copy_to_clipboard(&url)>
                                        "Copy"
                                    </button>
                                </p>
                            }
                        })
                }}
            </div>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let m = match data.await {
                        Ok(m) => m,
                        Err(e) => return view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    };
                    let approvers_only = m.approvers_only;
                    let ws = ctx.ws.get_value();
                    let invites = m.invites.into_iter().map(|i| {
                        let (ws1, ws2) = (ws.clone(), ws.clone());
                        let (id1, id2) = (i.id.clone(), i.id.clone());
                        let revoked = i.revoked;
                        let role = i.role.clone();
                        view! {
                            <tr data-testid="invite-row" data-revoked=revoked.to_string()>
                                <td>{i.role.clone()}</td>
                                <td>{format!("{} use(s)", i.uses)}</td>
                                <td>{if revoked { "revoked" } else { "active" }}</td>
                                <td>
                                    <Show when=move || !revoked>
                                        <button type="button" class="link" data-testid="revoke-invite"
                                            on:click={let (ws, id) = (ws1.clone(), id1.clone()); move |_| {
                                                let (ws, id) = (ws.clone(), id.clone());
                                                run(Box::pin(async move { revoke_invite(Some(ws), id).await }))
                                            }}>"Revoke"</button>
                                        " "
                                        <button type="button" class="link" data-testid="rotate-invite"
                                            on:click={let (ws, id, role) = (ws2.clone(), id2.clone(), role.clone()); move |_| {
                                                let (ws, id, role) = (ws.clone(), id.clone(), role.clone());
                                                run(Box::pin(async move {
                                                    let created = rotate_invite(Some(ws), id).await?;
                                                    link.set(Some((role, created.url)));
                                                    Ok(())
                                                }))
                                            }}>"Rotate"</button>
                                    </Show>
                                </td>
                            </tr>
                        }
                    }).collect_view();
                    let people = m.people.into_iter().map(|p| {
                        let ws = ws.clone();
                        let pid = p.person_id.clone();
                        let on_role = {
                            let (ws, pid) = (ws.clone(), pid.clone());
                            move |ev: leptos::ev::Event| {
                                let role = event_target_value(&ev);
                                let (ws, pid) = (ws.clone(), pid.clone());
                                run(Box::pin(async move { set_role(ws, pid, role).await }))
                            }
                        };
                        let on_approver = {
                            let (ws, pid) = (ws.clone(), pid.clone());
                            move |ev: leptos::ev::Event| {
                                let on = event_target_checked(&ev);
                                let (ws, pid) = (ws.clone(), pid.clone());
                                run(Box::pin(async move { set_approver(ws, pid, on).await }))
                            }
                        };
                        let on_remove = {
                            let (ws, pid) = (ws.clone(), pid.clone());
                            move |_| {
                                let (ws, pid) = (ws.clone(), pid.clone());
                                run(Box::pin(async move { remove_member(ws, pid).await }))
                            }
                        };
                        let role = p.role;
                        let options = [Role::Owner, Role::Member, Role::Viewer].map(|r| view! {
                            <option value=r.as_str() selected=r == role>{r.as_str()}</option>
                        });
                        view! {
                            <tr data-testid="person-row" data-name=p.display_name.clone()>
                                <td>{p.display_name.clone()}{p.is_bot.then_some(" (bot)")}</td>
                                <td>
                                    <select data-testid="person-role" aria-label="Role" on:change=on_role>{options.collect_view()}</select>
                                </td>
                                <td>
                                    <label>
                                        <input type="checkbox" data-testid="person-approver" checked=p.approver on:change=on_approver />
                                        " approver"
                                    </label>
                                </td>
                                <td>
                                    <button type="button" class="link danger" data-testid="remove-person" on:click=on_remove>"Remove"</button>
                                </td>
                            </tr>
                        }
                    }).collect_view();
                    let tokens = m.tokens.into_iter().filter(|t| !t.revoked).map(|t| {
                        let (ws, id) = (ws.clone(), t.id.clone());
                        view! {
                            <li data-testid="token-row">
                                {t.name.clone()} " · " {t.role.as_str()} " "
                                <button type="button" class="link" data-testid="revoke-token" on:click=move |_| {
                                    let (ws, id) = (ws.clone(), id.clone());
                                    run(Box::pin(async move { revoke_token(ws, id).await }))
                                }>"Revoke"</button>
                            </li>
                        }
                    }).collect_view();
                    let on_approvers_only = {
                        let ws = ws.clone();
                        move |ev: leptos::ev::Event| {
                            let on = event_target_checked(&ev);
                            let ws = ws.clone();
                            run(Box::pin(async move { set_approvers_only(ws, on).await }))
                        }
                    };
                    view! {
                        <div class="manage-block">
                            <table class="invites"><tbody>{invites}</tbody></table>
                        </div>
                        <div class="manage-block">
                            <h2>"People"</h2>
                            <label class="approvers-only">
                                <input type="checkbox" data-testid="approvers-only" checked=approvers_only on:change=on_approvers_only />
                                " Only owners and the approvers ticked below answer the agent's permission requests"
                            </label>
                            <table class="people"><tbody>{people}</tbody></table>
                        </div>
                        <div class="manage-block">
                            <h2>"API tokens"</h2>
                            <ul>{tokens}</ul>
                        </div>
                    }.into_any()
                })}
            </Suspense>
            <form class="manage-block token-form" on:submit=new_token>
                <label for="token-name">"New token for a script or bot, named"</label>
                <input id="token-name" node_ref=token_name data-testid="token-name" maxlength=MAX_NAME_CHARS required />
                <select node_ref=token_role aria-label="Token role">
                    <option value="member">"member"</option>
                    <option value="viewer">"viewer"</option>
                </select>
                <button type="submit" data-testid="create-token">"Create"</button>
            </form>
            <Show when=move || token.get().is_some()>
                <p class="link-out">
                    "Shown this once: "
                    <input readonly data-testid="token-value" prop:value=move || token.get().unwrap_or_default() />
                </p>
            </Show>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert" data-testid="manage-error">{move || error.get()}</p>
            </Show>
            {(instance_owner && sandbox.provider == crate::model::SandboxProvider::Remote)
                .then(|| view! { <sandbox::MoveWorkspace ws=ctx.ws.get_value() sandbox=sandbox.clone() /> })}
            <sandbox::DeleteWorkspace ws=ctx.ws.get_value() name />
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
