//! A button that opens and closes a panel, and says which it is.

use leptos::prelude::*;

#[component]
pub fn Toggle(
    open: RwSignal<bool>,
    label: &'static str,
    testid: &'static str,
    #[prop(default = "secondary")] class: &'static str,
) -> impl IntoView {
    view! {
        <button
            type="button"
            class=class
            data-testid=testid
            aria-expanded=move || open.get().to_string()
            on:click=move |_| open.update(|o| *o = !*o)
        >
            {label}
        </button>
    }
}
