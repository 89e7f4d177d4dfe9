//! The room's header: the workspace's name (and renaming it), the session's facts, the thread's
//! exports, who is here.

use leptos::prelude::*;

use super::RoomCtx;
use super::live::LiveRoom;
use crate::api::rename_workspace;
use crate::ui::components::{NameTag, Toggle};
use crate::ui::sandbox;

/// The workspace's name in the room's header; its owner can change it.
#[component]
pub(crate) fn WorkspaceName(name: RwSignal<String>, id: String, is_owner: bool) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let editing = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    let rename = ctx.action(move |ws, _, value: &String| {
        let value = value.clone();
        async move {
            let renamed = rename_workspace(ws, value).await?;
            name.set(renamed.name);
            editing.set(false);
            Ok(())
        }
    });
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if let Some(el) = input.get() {
            rename.dispatch(el.value());
        }
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

/// The room's header: the workspace's name, the session's title and usage, the agent and where it
/// runs, the thread's exports, who is here, your name, and the owner's "People & invites".
#[component]
pub(crate) fn RoomHeader(
    info: crate::model::WorkspaceInfo,
    live: LiveRoom,
    name: RwSignal<String>,
    threads_open: RwSignal<bool>,
    managing: RwSignal<bool>,
) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let role = ctx.access.role;
    let is_owner = role == crate::model::Role::Owner;
    let facts = live.facts;
    let export = |ext: &str| {
        format!(
            "/api/workspace/{}/threads/{}/export.{ext}",
            info.workspace_id, info.thread_id
        )
    };
    let (export_md, export_jsonl) = (export("md"), export("jsonl"));
    view! {
        <header class="room-header">
            <a class="brand" href="/">
                "Huddle"
            </a>
            <Toggle
                open=threads_open
                label="Threads"
                testid="threads-toggle"
                class="secondary threads-toggle"
            />
            <div class="room-title">
                <WorkspaceName name=live.name id=info.workspace_id.clone() is_owner />
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
                    <strong data-testid="agent">{info.agent.clone()}</strong>
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
                    <span class="badge" data-testid="my-role">{role.as_str()}</span>
                    " · export "
                    <a href=export_md download data-testid="export-md">"Markdown"</a>
                    " "
                    <a href=export_jsonl download data-testid="export-jsonl">"JSONL"</a>
                </p>
            </div>
            <div class="room-tools">
                <Online online=live.online />
                <NameTag name />
                {is_owner
                    .then(|| view! { <Toggle open=managing label="People & invites" testid="manage" /> })}
            </div>
        </header>
    }
}

/// Who is in the room, with their roles.
#[component]
fn Online(online: RwSignal<Vec<crate::model::Member>>) -> impl IntoView {
    view! {
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
    }
}
