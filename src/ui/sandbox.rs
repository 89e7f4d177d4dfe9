//! Where a workspace's agent runs, in the UI: the room header's sandbox facts, deleting a
//! workspace (with a confirmation), moving it to another sandbox host, and the instance owner's
//! sandbox hosts on the home page.

use leptos::prelude::*;

use crate::ui::components::ErrorLine;
use leptos::task::spawn_local;

use crate::api::{add_sandbox_host, delete_workspace, move_workspace, sandbox_hosts};
use crate::model::{SandboxProvider, SandboxSummary};

/// " · sandbox sbx_… (bubblewrap, this machine)", or a warning that the agent is not sandboxed.
#[component]
pub fn SandboxFacts(sandbox: SandboxSummary) -> impl IntoView {
    let where_ = match sandbox.provider {
        SandboxProvider::Local => "bubblewrap on this machine".to_string(),
        SandboxProvider::None => "this machine".to_string(),
        SandboxProvider::Remote => format!("host {}", sandbox.host),
    };
    let not_sandboxed = sandbox.provider == SandboxProvider::None;
    let title = format!("{} ({where_})", sandbox.id);
    view! {
        " · sandbox "
        <span
            data-testid="sandbox"
            data-provider=sandbox.provider.as_str()
            data-host=sandbox.host.clone()
            title=title
        >
            <code>{sandbox.id.clone()}</code>
            " ("
            {where_}
            ")"
        </span>
        {not_sandboxed
            .then(|| {
                view! {
                    " "
                    <span class="badge warning" data-testid="not-sandboxed" title="HUDDLE_SANDBOX=none: the agent runs with Huddle's rights">
                        "not sandboxed"
                    </span>
                }
            })}
    }
}

/// The owner deletes the workspace: only after typing its name, since nothing of it is kept.
#[component]
pub fn DeleteWorkspace(ws: String, name: RwSignal<String>) -> impl IntoView {
    let asking = RwSignal::new(false);
    let typed = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let matches = move || name.with(|n| typed.with(|t| t.trim() == n.trim()));
    let ws = StoredValue::new(ws);
    let navigate = leptos_router::hooks::use_navigate();
    let delete = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if !matches() {
            return;
        }
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match delete_workspace(ws.get_value()).await {
                Ok(()) => navigate("/", Default::default()),
                Err(e) => {
                    error.set(Some(e.message));
                    busy.set(false);
                }
            }
        });
    };
    view! {
        <div class="manage-block danger" data-testid="delete-block">
            <h2>"Delete this workspace"</h2>
            <Show
                when=move || asking.get()
                fallback=move || {
                    view! {
                        <button type="button" class="danger" data-testid="delete-workspace" on:click=move |_| asking.set(true)>
                            "Delete workspace…"
                        </button>
                    }
                }
            >
                <form on:submit=delete.clone() data-testid="delete-confirm">
                    <p>
                        "This deletes "
                        <strong>{move || name.get()}</strong>
                        " for everyone: its conversation, images, invite links, tokens, sandbox and working directory. It cannot be undone."
                    </p>
                    <label>
                        "Type the workspace's name to confirm: "
                        <input
                            data-testid="delete-name"
                            autocomplete="off"
                            on:input=move |ev| typed.set(event_target_value(&ev))
                            prop:value=move || typed.get()
                        />
                    </label>
                    " "
                    <button type="submit" class="danger" data-testid="delete-for-good" disabled=move || !matches() || busy.get()>
                        "Delete for good"
                    </button>
                    " "
                    <button type="button" class="secondary" on:click=move |_| { asking.set(false); typed.set(String::new()); }>
                        "Keep it"
                    </button>
                </form>
            </Show>
            <ErrorLine error />
        </div>
    }
}

/// The instance owner moves the workspace's sandbox to another host.
#[component]
pub fn MoveWorkspace(ws: String, sandbox: SandboxSummary) -> impl IntoView {
    let hosts = LocalResource::new(sandbox_hosts);
    let error = RwSignal::new(None::<String>);
    let done = RwSignal::new(None::<String>);
    let ws = StoredValue::new(ws);
    let current = sandbox.host.clone();
    view! {
        <div class="manage-block" data-testid="move-block">
            <h2>"Sandbox host"</h2>
            <p>"Moving starts the agent afresh on the other host; the room says whether its memory came along."</p>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || {
                    let current = current.clone();
                    Suspend::new(async move {
                        let list = hosts.await.unwrap_or_default();
                        let others: Vec<_> = list.into_iter().filter(|h| h.id != current && h.healthy).collect();
                        if others.is_empty() {
                            return view! { <p class="muted">"No other healthy sandbox host is registered."</p> }.into_any();
                        }
                        others
                            .into_iter()
                            .map(|h| {
                                let id = h.id.clone();
                                view! {
                                    <button type="button" class="secondary" data-testid="move-to" data-host=h.id.clone()
                                        on:click=move |_| {
                                            let id = id.clone();
                                            spawn_local(async move {
                                                match move_workspace(ws.get_value(), id.clone()).await {
                                                    Ok(_) => done.set(Some(format!("Moved to {id}."))),
                                                    Err(e) => error.set(Some(e.message)),
                                                }
                                            });
                                        }
                                    >
                                        {format!("Move to {}", h.id)}
                                    </button>
                                    " "
                                }
                            })
                            .collect_view()
                            .into_any()
                    })
                }}
            </Suspense>
            <Show when=move || done.get().is_some()>
                <p role="status">{move || done.get()}</p>
            </Show>
            <ErrorLine error />
        </div>
    }
}

/// The instance owner's sandbox hosts: their health and load, and a form to register one. Read
/// in the browser only (an effect), so the page renders the same on the server and when hydrated.
#[component]
pub fn SandboxHosts() -> impl IntoView {
    let version = RwSignal::new(0u32);
    let hosts = RwSignal::new(None::<Vec<crate::model::SandboxHostInfo>>);
    let error = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        version.track();
        spawn_local(async move {
            match sandbox_hosts().await {
                Ok(list) => hosts.set(Some(list)),
                Err(e) => error.set(Some(e.message)),
            }
        });
    });
    let url = NodeRef::<leptos::html::Input>::new();
    let token = NodeRef::<leptos::html::Input>::new();
    let root = NodeRef::<leptos::html::Input>::new();
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value =
            |n: NodeRef<leptos::html::Input>| n.get().map(|i| i.value()).unwrap_or_default();
        let (u, t, r) = (value(url), value(token), value(root));
        spawn_local(async move {
            let some = |s: String| Some(s).filter(|s| !s.trim().is_empty());
            match add_sandbox_host(u, some(t), some(r)).await {
                Ok(_) => error.set(None),
                Err(e) => error.set(Some(e.message)),
            }
            version.update(|v| *v += 1);
        });
    };
    let list = move || {
        let list = hosts.get()?;
        Some(if list.is_empty() {
            view! { <p class="muted">"None yet: agents run on this machine."</p> }.into_any()
        } else {
            view! {
                <ul>
                    {list
                        .into_iter()
                        .map(|h| {
                            view! {
                                <li data-testid="sandbox-host" data-healthy=h.healthy.to_string()>
                                    <strong>{h.id.clone()}</strong>
                                    " "
                                    <span class=if h.healthy { "badge" } else { "badge warning" }>
                                        {if h.healthy { "healthy" } else { "unreachable" }}
                                    </span>
                                    {format!(" · {} workspace(s) · in {}", h.workspaces, h.cwd_root)}
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            }
                .into_any()
        })
    };
    view! {
        <section class="instance" aria-labelledby="hosts-title" data-testid="sandbox-hosts">
            <h2 id="hosts-title">"Sandbox hosts"</h2>
            <p>
                "New workspaces go to the least-loaded healthy host. A host is a "
                <code>"sandbox-agent server --token … -H 0.0.0.0"</code>
                " on another machine, container or VM."
            </p>
            {list}
            <form on:submit=add class="host-form">
                <input node_ref=url data-testid="host-url" placeholder="http://10.0.0.5:2468" required />
                <input node_ref=token data-testid="host-token" placeholder="token" type="password" autocomplete="off" />
                <input node_ref=root data-testid="host-root" placeholder="/tmp/huddle-workspaces" />
                <button type="submit" class="secondary" data-testid="add-host">"Add host"</button>
            </form>
            <ErrorLine error />
        </section>
    }
}
