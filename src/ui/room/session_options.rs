//! The agent session's options (mode, model) as pickers.

use leptos::prelude::*;

use crate::api::set_option;
use crate::timeline;
use crate::ui::room::RoomCtx;

/// The agent's session options (its mode, its model), shared by the room: members change them.
#[component]
pub(crate) fn SessionOptions(facts: Memo<timeline::SessionFacts>, can_act: bool) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let set = ctx.action(|ws, th, (config_id, value): &(String, String)| {
        set_option(ws, th, config_id.clone(), value.clone())
    });
    view! {
        <Show when=move || facts.with(|f| !f.options.is_empty())>
            <div class="session-options" data-testid="session-options">
                <For
                    each=move || facts.get().options
                    key=|o| (o.id.clone(), o.current.clone(), o.choices.len())
                    children=move |o| {
                        let id = o.id.clone();
                        let on_change = move |ev: leptos::ev::Event| {
                            set.dispatch((id.clone(), event_target_value(&ev)));
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
