//! The UI: the HTML shell, the routes and their pages. Rendered on the server with the full
//! history, hydrated in the browser, then kept live over server-sent events.
//!
//! - `pages`: home, a workspace (its room), no access, not found.
//! - `room`: the room's parts (header, thread list, timeline rows, dock, composer, options,
//!   manage panel) and its live state.
//! - `components`: small pieces every page uses (clock, name tag, error line).
//! - `sandbox`: where a workspace's agent runs, as the UI shows and manages it.
//! - `inbox`: what needs you (the inbox, browser notifications, "notify me").

pub mod components;
pub mod inbox;
pub mod pages;
pub mod room;
pub mod sandbox;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{SsrMode, path};

use crate::ui::pages::{HomePage, NotFound, WorkspacePage};

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
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
                <Route path=path!("/") view=HomePage ssr=SsrMode::Async />
                <Route path=path!("/w/:id") view=WorkspacePage ssr=SsrMode::Async />
                <Route path=path!("/w/:id/t/:thread") view=WorkspacePage ssr=SsrMode::Async />
            </Routes>
        </Router>
    }
}

/// True once the page runs in the browser: what differs from the server's render waits for it.
pub(crate) fn hydrated() -> RwSignal<bool> {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    hydrated
}
