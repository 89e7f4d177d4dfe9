//! One way to show what went wrong with an action: a line that screen readers announce.

use leptos::prelude::*;

/// The error of the last action, if any (`role="alert"`).
#[component]
pub fn ErrorLine(
    error: RwSignal<Option<String>>,
    #[prop(optional, into)] testid: Option<&'static str>,
) -> impl IntoView {
    view! {
        <Show when=move || error.with(Option::is_some)>
            <p class="error" role="alert" data-testid=testid>
                {move || error.get()}
            </p>
        </Show>
    }
}
