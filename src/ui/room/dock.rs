//! The dock under the timeline: the running turn (and Stop), the question the agent waits on,
//! the queue, who is typing, the last action's error, the session's options and the composer.

use leptos::prelude::*;

use super::RoomCtx;
use super::composer::Composer;
use super::live::LiveRoom;
use super::session_options::SessionOptions;
use crate::api::{cancel, remove_queued};
use crate::browser;
use crate::ui::components::ErrorLine;

#[component]
pub(crate) fn Dock(live: LiveRoom, my_id: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let can_act = ctx.access.role.can_act();
    // The dock changes when the turn or the queue does, not on every streamed chunk (so its
    // buttons stay put under the pointer).
    let facts = Memo::new(move |_| live.facts.get());
    let commands = Memo::new(move |_| facts.with(|f| f.commands.clone()));
    view! {
        <footer class="dock">
            <TurnStatus live can_act />
            <Show when=move || live.asking.with(Option::is_some)>
                <button
                    type="button"
                    class="asking"
                    data-testid="waiting-for-answer"
                    on:click=move |_| {
                        if let Some(key) = live.asking.get_untracked() {
                            browser::reveal(&format!("row-{key}"));
                        }
                    }
                >
                    "The agent is waiting for an answer · show the question"
                </button>
            </Show>
            <Queue live my_id />
            <p class="typing" aria-live="polite" data-testid="typing">
                {move || live.typing_line()}
            </p>
            <ErrorLine error=ctx.error testid="error" />
            <SessionOptions facts can_act />
            {if can_act {
                view! { <Composer connected=live.connected commands /> }.into_any()
            } else {
                view! {
                    <p class="viewer-note" data-testid="viewer-note">
                        "You are watching as a viewer: you see everything live, and the owner can make you a member."
                    </p>
                }
                    .into_any()
            }}
        </footer>
    }
}

/// "Agent is working for Ada · 12s", with Stop (and Stop and clear the queue).
#[component]
fn TurnStatus(live: LiveRoom, can_act: bool) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let running = Memo::new(move |_| live.running.get());
    let has_queue = Memo::new(move |_| live.queue.with(|q| !q.is_empty()));
    let cancel = ctx.action(|ws, th, clear: &bool| cancel(ws, th, *clear));
    let stop = move |_| {
        cancel.dispatch(false);
    };
    let stop_and_clear = move |_| {
        cancel.dispatch(true);
    };
    move || {
        running.get().map(|turn| {
            let started = turn.started_at as f64;
            let now = live.now;
            view! {
                <div class="turn" role="status" data-testid="turn-status">
                    <span class="spinner" aria-hidden="true"></span>
                    <span>
                        "Agent is working for " {turn.display_name}
                        {move || {
                            let secs = ((now.get() - started) / 1000.0).max(0.0) as u64;
                            if now.get() > 0.0 { format!(" · {secs}s") } else { String::new() }
                        }}
                    </span>
                    <Show when=move || can_act>
                        <button type="button" class="danger" data-testid="stop" on:click=stop>
                            "Stop"
                        </button>
                    </Show>
                    <Show when=move || can_act && has_queue.get()>
                        <button
                            type="button"
                            class="danger"
                            data-testid="stop-and-clear"
                            on:click=stop_and_clear
                        >
                            "Stop and clear the queue"
                        </button>
                    </Show>
                </div>
            }
        })
    }
}

/// The prompts waiting behind the running turn; their authors (and owners) may take them off.
#[component]
fn Queue(live: LiveRoom, my_id: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let is_owner = ctx.access.role == crate::model::Role::Owner;
    let my_id = StoredValue::new(my_id);
    let queue = Memo::new(move |_| live.queue.get());
    let remove = ctx.action(|ws, th, seq: &i64| remove_queued(ws, th, *seq));
    view! {
        <Show when=move || queue.with(|q| !q.is_empty())>
            <div class="queue" data-testid="queue">
                <h2>"Up next"</h2>
                <ol>
                    <For
                        each=move || queue.get()
                        key=|w| w.seq
                        children=move |w| {
                            let removable = is_owner || my_id.with_value(|id| w.mine(id));
                            let seq = w.seq;
                            view! {
                                <li>
                                    <span class="author">{w.display_name}</span>
                                    ": "
                                    <span class="text">{w.text}</span>
                                    {removable
                                        .then(|| {
                                            view! {
                                                " "
                                                <button
                                                    type="button"
                                                    class="link"
                                                    data-testid="remove-queued"
                                                    on:click=move |_| {
                                                        remove.dispatch(seq);
                                                    }
                                                >
                                                    "Remove"
                                                </button>
                                            }
                                        })}
                                </li>
                            }
                        }
                    />
                </ol>
            </div>
        </Show>
    }
}
