//! The page of a workspace: one of its threads, as a room.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{ErrorCode, room_page};
use crate::ui::pages::{NoAccess, NotFound};
use crate::ui::room::Room;

#[component]
pub(crate) fn WorkspacePage() -> impl IntoView {
    let params = use_params_map();
    // The workspace's own URL opens its most recently active thread.
    let page = Resource::new(
        move || {
            let p = params.read();
            (p.get("id").unwrap_or_default(), p.get("thread"))
        },
        |(id, thread)| {
            let latest = thread.is_none();
            room_page(id, thread, latest)
        },
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading workspace…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(page) => {
                        let by_thread = params.read_untracked().get("thread").is_some();
                        view! { <Room page by_thread /> }.into_any()
                    }
                    Err(e) if e.code == ErrorCode::NotFound => view! { <NotFound /> }.into_any(),
                    Err(e) if matches!(e.code, ErrorCode::Forbidden | ErrorCode::Unauthorized) => {
                        view! { <NoAccess message=e.message /> }.into_any()
                    }
                    Err(e) => {
                        view! {
                            <main>
                                <p class="error" role="alert">
                                    {e.message}
                                </p>
                            </main>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}
