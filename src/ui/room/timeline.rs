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
                children=move |item| {
                    let id = anchor(&item.key);
                    view! { <div class="row" id=id><Row item /></div> }
                }
            />
            <Show when=move || live.rows.with(|r| r.is_empty()) && live.older.get() == 0>
                <p class="empty">"Nothing here yet. Say hello to the agent below."</p>
            </Show>
            <For
                each=move || live.rows.get()
                key=|row| row.key.clone()
                children=move |row| view! { <div class="row" id=anchor(&row.key)><LiveRow item=row.item /></div> }
            />
        </main>
    }
}

/// A row's anchor, `seq-<n>` for the room-log seq it starts at (its key is a letter and that
/// seq): the inbox and notifications link to rows by seq.
fn anchor(key: &str) -> String {
    format!(
        "seq-{}",
        key.trim_start_matches(|c: char| c.is_ascii_alphabetic())
    )
}
