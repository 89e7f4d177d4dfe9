//! A workspace page for someone who is not in it.

use leptos::prelude::*;
use leptos_meta::Title;

/// A workspace page for someone who is not in it.
#[component]
pub(crate) fn NoAccess(message: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::FORBIDDEN);
    }
    view! {
        <Title text="Huddle · ask for an invite" />
        <main class="not-found" data-testid="no-access">
            <h1>"Ask the owner for an invite"</h1>
            <p>{message}</p>
            <a href="/">"Back to Huddle"</a>
        </main>
    }
}
