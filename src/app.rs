//! The UI: the HTML shell, the routes and their pages. Rendered on the server, hydrated in the browser.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::{use_navigate, use_params_map};
use leptos_router::{SsrMode, path};

use crate::api::{ErrorCode, create_workspace, get_workspace};
use crate::model::WorkspaceSummary;

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
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

#[component]
fn HomePage() -> impl IntoView {
    let navigate = use_navigate();
    let agent = NodeRef::<leptos::html::Select>::new();
    let pending = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
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
                    <option value="mock" selected>"mock — needs no credentials"</option>
                </select>
                <button type="submit" data-testid="new-workspace" disabled=move || pending.get()>
                    "New workspace"
                </button>
            </form>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert">{move || error.get()}</p>
            </Show>
        </main>
    }
}

#[component]
fn WorkspacePage() -> impl IntoView {
    let params = use_params_map();
    let workspace = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        get_workspace,
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading workspace…"</p> }>
            {move || Suspend::new(async move {
                match workspace.await {
                    Ok(ws) => view! { <WorkspaceHeader ws /> }.into_any(),
                    Err(e) if e.code == ErrorCode::NotFound => view! { <NotFound /> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn WorkspaceHeader(ws: WorkspaceSummary) -> impl IntoView {
    let title = format!("Huddle · {}", ws.agent);
    let id = ws.workspace_id.clone();
    view! {
        <Title text=title />
        <main class="workspace" data-workspace-id=id>
            <header class="workspace-header">
                <a class="brand" href="/">"Huddle"</a>
                <h1>"Workspace"</h1>
                <dl class="facts">
                    <dt>"Agent"</dt>
                    <dd data-testid="agent">{ws.agent}</dd>
                    <dt>"Id"</dt>
                    <dd><code data-testid="workspace-id">{ws.workspace_id}</code></dd>
                </dl>
            </header>
        </main>
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
