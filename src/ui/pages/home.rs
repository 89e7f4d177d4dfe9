//! The home page: your workspaces, a new one, the instance owner's tools.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;

use crate::api::{create_workspace, creator_invite, home};
use crate::model::{HomeView, Me};
use crate::ui::components::{ErrorLine, NameTag, activity_label};
use crate::ui::sandbox;

#[component]
pub(crate) fn HomePage() -> impl IntoView {
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
pub(crate) fn Home(view: HomeView) -> impl IntoView {
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
    let needs_you = crate::ui::inbox::InboxState::new(None);
    needs_you.start();
    // The count of what waits on you leads the tab's title.
    Effect::new(move |_| {
        crate::browser::set_title(&match needs_you.count() {
            0 => "Huddle".to_string(),
            n => format!("({n}) Huddle"),
        })
    });
    view! {
        <NameTag name />
        <crate::ui::inbox::NotifySwitch />
        <crate::ui::inbox::InboxPanel state=needs_you />
        {create}
        <ErrorLine error />
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
pub(crate) fn CreateForm(
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
