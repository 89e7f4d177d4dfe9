//! The owner's panel: people, roles, invites, tokens and the workspace's sandbox.

use leptos::prelude::*;

use crate::ui::components::ErrorLine;
use leptos::task::spawn_local;

use crate::api::{
    create_token, invite, members, remove_member, revoke_invite, revoke_token, rotate_invite,
    set_approver, set_approvers_only, set_role,
};
use crate::browser;
use crate::model::{MAX_NAME_CHARS, Role};
use crate::ui::room::RoomCtx;

use crate::ui::sandbox;

/// The owner's tools: invite links, people and their roles, approvers, API tokens; deleting the
/// workspace, and (for the instance owner) moving it to another sandbox host.
#[component]
pub(crate) fn ManagePanel(
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
            <ErrorLine error testid="manage-error" />
            <crate::ui::inbox::WebhookForm ws=ctx.ws.get_value() />
            {(instance_owner && sandbox.provider == crate::model::SandboxProvider::Remote)
                .then(|| view! { <sandbox::MoveWorkspace ws=ctx.ws.get_value() sandbox=sandbox.clone() /> })}
            <sandbox::DeleteWorkspace ws=ctx.ws.get_value() name />
        </section>
    }
}
