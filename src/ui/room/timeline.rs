//! The room's timeline: older history paged in above, then the live rows.

use leptos::prelude::*;

use super::RoomCtx;
use super::live::LiveRoom;
use super::rows::{LiveRow, Row};

#[component]
pub(crate) fn Timeline(live: LiveRoom) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    view! {
        <main class="timeline" data-testid="timeline">
            <Show when=move || { live.older.get() != 0 }>
                <button
                    type="button"
                    class="secondary older"
                    data-testid="older"
                    disabled=move || live.loading_older.get()
                    on:click=move |_| live.load_older(ctx)
                >
                    "Show earlier messages"
                </button>
            </Show>
            <For
                each=move || live.older_rows.get()
                key=|item| item.key.clone()
                children=move |item| view! { <Row item /> }
            />
            <Show when=move || live.rows.with(|r| r.is_empty()) && live.older.get() == 0>
                <p class="empty">"Nothing here yet. Say hello to the agent below."</p>
            </Show>
            <For
                each=move || live.rows.get()
                key=|row| row.key.clone()
                children=move |row| view! { <LiveRow item=row.item /> }
            />
        </main>
    }
}
