//! Your display name, and changing it.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::rename;
use crate::model::MAX_NAME_CHARS;

/// Who you are here, and a way to change your name (kept on the server).
#[component]
pub(crate) fn NameTag(name: RwSignal<String>) -> impl IntoView {
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
