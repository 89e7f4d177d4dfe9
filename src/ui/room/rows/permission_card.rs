//! The agent's question, with its choices and who answered.

use leptos::prelude::*;

use crate::api::answer_permission;
use crate::model::Role;
use crate::timeline::PermissionView;
use crate::ui::room::RoomCtx;
use crate::ui::room::rows::rendered_texts;

#[component]
pub(crate) fn PermissionCard(p: PermissionView, key: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let answer = ctx.action(|ws, th, (request_id, option_id): &(String, String)| {
        answer_permission(ws, th, request_id.clone(), option_id.clone())
    });
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
                            answer.dispatch((request_id.clone(), option_id.clone()));
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
                                data-kind=o.kind.as_str()
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
