//! The composer: the message box, its slash-command palette and its image attachments.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{prompt, typing};
use crate::browser;
use crate::model::MAX_PROMPT_CHARS;
use crate::timeline::{self};
use crate::ui::room::RoomCtx;

#[component]
pub(crate) fn Composer(
    connected: RwSignal<bool>,
    commands: Memo<Vec<timeline::CommandView>>,
) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let text = NodeRef::<leptos::html::Textarea>::new();
    // The slash-command palette: what is typed while it is a bare `/word`; ↑ ↓ choose, Enter or
    // Tab takes the chosen command, Esc closes it until the word changes.
    let draft = RwSignal::new(String::new());
    let chosen = RwSignal::new(0usize);
    let dismissed = RwSignal::new(None::<String>);
    let matching = move || {
        let d = draft.get();
        if !d.starts_with('/')
            || d.contains(char::is_whitespace)
            || dismissed.with(|x| x.as_ref() == Some(&d))
        {
            return Vec::new();
        }
        commands.with(|c| {
            c.iter()
                .filter(|c| c.name.starts_with(&d[1..]))
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let pick = move |name: String| {
        if let Some(el) = text.get_untracked() {
            let value = format!("/{name} ");
            el.set_value(&value);
            draft.set(value);
            let _ = el.focus();
        }
    };
    let team_only = NodeRef::<leptos::html::Input>::new();
    let mentions = super::mentions::MentionPicker::new(ctx.ws.get_value());
    let sending = RwSignal::new(false);
    // Images pasted or dropped into the composer: (type, base64), sent with the next message.
    let attachments = RwSignal::new(Vec::<(String, String)>::new());
    let on_image = std::rc::Rc::new(move |got: Result<(String, String), String>| match got {
        Ok(image) => {
            if attachments.with_untracked(|a| a.len()) >= crate::model::MAX_IMAGES {
                ctx.error.set(Some(format!(
                    "A message carries at most {} images.",
                    crate::model::MAX_IMAGES
                )));
            } else {
                attachments.update(|a| a.push(image));
            }
        }
        Err(why) => ctx.error.set(Some(why)),
    }) as browser::OnImage;
    let on_paste = {
        let on_image = on_image.clone();
        move |ev: leptos::ev::ClipboardEvent| {
            if browser::read_images(&ev, on_image.clone()) {
                ev.prevent_default();
            }
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        browser::read_images(&ev, on_image.clone());
    };
    let last_typing = StoredValue::new(0f64);
    // Before hydration (or without WebAssembly) the form posts by itself: never "offline".
    let offline = move || ctx.hydrated.get() && !connected.get();
    let send = move || {
        let Some(el) = text.get_untracked() else {
            return;
        };
        let value = el.value();
        if value.trim().is_empty() {
            ctx.error.set(Some("Type a message first.".into()));
            return;
        }
        if sending.get_untracked() || offline() {
            return;
        }
        sending.set(true);
        let ws = ctx.ws.get_value();
        let thread = Some(ctx.thread.get_value());
        spawn_local(async move {
            let team = team_only.get_untracked().is_some_and(|t| t.checked());
            let images = attachments
                .get_untracked()
                .into_iter()
                .map(|(mime_type, data)| crate::model::ImageUpload { mime_type, data })
                .collect();
            let mentioned = mentions.ids_in(&value);
            match prompt(ws, thread, value, team, images, mentioned).await {
                Ok(_) => {
                    el.set_value("");
                    attachments.set(Vec::new());
                    mentions.clear();
                    ctx.error.set(None);
                }
                // The text stays in the box: nothing typed is lost.
                Err(e) => ctx.error.set(Some(e.message)),
            }
            sending.set(false);
        });
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        send();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if mentions.key(&ev, text) {
            return;
        }
        let open = matching();
        if !open.is_empty() && !ev.is_composing() {
            let n = open.len();
            let at = chosen.get_untracked().min(n - 1);
            let step = match ev.key().as_str() {
                "ArrowDown" => Some((at + 1) % n),
                "ArrowUp" => Some((at + n - 1) % n),
                _ => None,
            };
            if let Some(next) = step {
                ev.prevent_default();
                chosen.set(next);
                browser::reveal(&format!("command-{next}"));
                return;
            }
            match ev.key().as_str() {
                "Enter" | "Tab" if !ev.shift_key() => {
                    ev.prevent_default();
                    pick(open[at].name.clone());
                    return;
                }
                "Escape" => {
                    ev.prevent_default();
                    dismissed.set(Some(draft.get_untracked()));
                    return;
                }
                _ => {}
            }
        }
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let on_input = move |ev: leptos::ev::Event| {
        draft.set(event_target_value(&ev));
        mentions.typed(&draft.get_untracked());
        chosen.set(0);
        let now = browser::now_ms();
        if now - last_typing.get_value() < 2500.0 {
            return;
        }
        last_typing.set_value(now);
        let ws = ctx.ws.get_value();
        let thread = Some(ctx.thread.get_value());
        spawn_local(async move {
            let _ = typing(ws, thread).await;
        });
    };
    let action = format!("/w/{}/send", ctx.ws.get_value());
    view! {
        <form
            class="composer"
            method="post"
            action=action
            on:submit=on_submit
            on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default()
            on:drop=on_drop
        >
            <input type="hidden" name="csrf" value=ctx.csrf.get_value() />
            <input type="hidden" name="thread" value=ctx.thread.get_value() />
            <input type="hidden" name="back" value=if ctx.by_thread { "thread" } else { "workspace" } />
            <label class="team-only-toggle" title="The agent does not get it as a prompt; it sees it as context with the next one">
                <input type="checkbox" name="team_only" data-testid="team-only" node_ref=team_only />
                " Team only"
            </label>
            <Show when=move || !matching().is_empty()>
                <ul class="palette" data-testid="palette" role="listbox" aria-label="Slash commands">
                    {move || {
                        matching()
                            .into_iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let name = c.name.clone();
                                let active = move || chosen.get() == i;
                                view! {
                                    <li id=format!("command-{i}") role="option" aria-selected=move || active().to_string()>
                                        <button
                                            type="button"
                                            class="command"
                                            class:active=active
                                            tabindex="-1"
                                            data-testid="command"
                                            on:click=move |_| pick(name.clone())
                                        >
                                            <code>{format!("/{}", c.name)}</code>
                                            " "
                                            <span class="description">{c.description.clone()}</span>
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
            </Show>
            <super::mentions::MentionList picker=mentions text />
            <Show when=move || attachments.with(|a| !a.is_empty())>
                <ul class="attachments pending" data-testid="attachments">
                    {move || {
                        attachments
                            .get()
                            .into_iter()
                            .enumerate()
                            .map(|(i, (mime, data))| {
                                view! {
                                    <li>
                                        <img class="attachment" src=format!("data:{mime};base64,{data}") alt="An image to send" />
                                        <button
                                            type="button"
                                            class="link"
                                            aria-label="Remove this image"
                                            on:click=move |_| attachments.update(|a| { a.remove(i); })
                                        >
                                            "×"
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
            </Show>
            <label class="sr-only" for="composer-text">
                "Message"
            </label>
            <textarea
                id="composer-text"
                name="text"
                data-testid="composer"
                rows="2"
                maxlength=MAX_PROMPT_CHARS
                placeholder="Message the agent and your team…"
                aria-describedby="composer-hint"
                node_ref=text
                on:keydown=on_keydown
                on:input=on_input
                on:paste=on_paste
            ></textarea>
            <button type="submit" data-testid="send" disabled=move || offline() || sending.get()>
                "Send"
            </button>
            <p id="composer-hint" class="hint">
                {move || {
                    if offline() {
                        "Disconnected: sending is paused until the room is back."
                    } else {
                        "Enter to send · Shift+Enter for a new line"
                    }
                }}
            </p>
        </form>
    }
}
