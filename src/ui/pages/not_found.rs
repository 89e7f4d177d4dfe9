//! What an unknown address gets.

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub(crate) fn NotFound() -> impl IntoView {
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
