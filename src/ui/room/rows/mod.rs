//! The timeline's rows: each kind of item as the room shows it.

pub mod permission_card;
pub mod tool_card;

use leptos::prelude::*;

use crate::model::NoticeLevel;
use crate::timeline::{Item, PlanStatus, ToolView, View};
use crate::ui::components::Clock;
use crate::ui::room::RoomCtx;

use crate::ui::room::rows::permission_card::PermissionCard;
use crate::ui::room::rows::tool_card::ToolCard;
use crate::ui::room::threads;

/// A row of the timeline and the signal that updates it in place.
#[derive(Clone)]
pub struct RowSlot {
    pub(crate) key: String,
    pub(crate) item: RwSignal<Item>,
}

impl RowSlot {
    pub(crate) fn new(item: Item) -> Self {
        RowSlot {
            key: item.key.clone(),
            item: RwSignal::new(item),
        }
    }
}

/// A row that follows its item. Thoughts keep their element (and so stay open) while they grow;
/// other rows are drawn again when their item changes, which costs that row only.
#[component]
pub(crate) fn LiveRow(item: RwSignal<Item>) -> impl IntoView {
    if item.with_untracked(|i| matches!(i.view, View::Thought { .. })) {
        let text = move || {
            item.with(|i| match &i.view {
                View::Thought { text } => text.clone(),
                _ => String::new(),
            })
        };
        return view! {
            <details class="thought" data-testid="thought">
                <summary>"Thinking"</summary>
                <p class="text">{text}</p>
            </details>
        }
        .into_any();
    }
    (move || view! { <Row item=item.get() /> }).into_any()
}

#[component]
pub(crate) fn Row(item: Item) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let Item {
        key,
        at,
        rev,
        view: row,
    } = item;
    let can_fork = ctx.access.role.can_act();
    match row {
        View::Chat {
            user_id,
            display_name,
            text,
            team_only,
            images,
            mentions,
        } => {
            let mine = move || {
                ctx.me
                    .with(|m| m.as_ref().is_some_and(|m| m.user_id == user_id))
            };
            let ids: Vec<String> = mentions.iter().map(|m| m.person_id.clone()).collect();
            let mentions_me = move || {
                ctx.me
                    .with(|m| m.as_ref().is_some_and(|m| ids.contains(&m.user_id)))
            };
            let text = mentioned_text(&text, &mentions);
            view! {
                <article class="msg chat" class:mine=mine class:mentions-me=mentions_me class:team-only=team_only data-testid="chat">
                    <header>
                        <span class="author" data-testid="author">{display_name}</span>
                        <Clock at />
                        {can_fork.then(|| view! { <threads::ForkButton seq=rev /> })}
                        {team_only
                            .then(|| {
                                view! {
                                    <span class="badge" data-testid="team-only-badge" title="Not a prompt: the agent sees it with the next one">
                                        "team only"
                                    </span>
                                }
                            })}
                    </header>
                    <p class="text">{text}</p>
                    {(!images.is_empty())
                        .then(|| {
                            let ws = ctx.ws.get_value();
                            view! {
                                <div class="attachments">
                                    {images
                                        .into_iter()
                                        .map(|i| {
                                            view! {
                                                <a href=crate::model::image_url(&ws, &i.id) target="_blank" rel="noopener">
                                                    <img
                                                        class="attachment"
                                                        data-testid="chat-image"
                                                        src=crate::model::image_url(&ws, &i.id)
                                                        alt="An image sent with the message"
                                                    />
                                                </a>
                                            }
                                        })
                                        .collect_view()}
                                </div>
                            }
                        })}
                </article>
            }
            .into_any()
        }
        View::Agent { text, done } => {
            let html = move || ctx.rendered.with(|r| r.get(&key).cloned());
            view! {
                <article class="msg agent" class:streaming=!done data-testid="agent-message">
                    <header>
                        <span class="author">"Agent"</span>
                        <Clock at />
                        {(can_fork && done).then(|| view! { <threads::ForkButton seq=rev /> })}
                    </header>
                    {move || match html() {
                        Some(html) if done => view! { <div class="markdown" inner_html=html></div> }.into_any(),
                        _ => view! { <p class="text">{text.clone()}</p> }.into_any(),
                    }}
                </article>
            }
            .into_any()
        }
        View::Thought { text } => view! {
            <details class="thought" data-testid="thought">
                <summary>"Thinking"</summary>
                <p class="text">{text}</p>
            </details>
        }
        .into_any(),
        View::Tool(tool) => view! { <ToolCard tool key=key.clone() /> }.into_any(),
        View::Plan { entries } => view! {
            <section class="card plan" data-testid="plan" aria-label="Plan">
                <h3>"Plan"</h3>
                <ul>
                    {entries
                        .into_iter()
                        .map(|e| {
                            let mark = match e.status {
                                PlanStatus::Completed => "☑",
                                PlanStatus::InProgress => "◐",
                                PlanStatus::Pending => "☐",
                            };
                            view! {
                                <li class=e.status.as_str() data-status=e.status.as_str()>
                                    <span aria-hidden="true">{mark}</span>
                                    " "
                                    {e.content}
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </section>
        }
        .into_any(),
        View::Permission(p) => view! { <PermissionCard p key=key /> }.into_any(),
        View::System { level, text } => {
            let class = match level {
                NoticeLevel::Info => "system info",
                NoticeLevel::Warning => "system warning",
                NoticeLevel::Error => "system error",
            };
            view! {
                <p class=class data-testid="system">
                    {text}
                </p>
            }
            .into_any()
        }
        View::Raw { label, json } => view! {
            <details class="raw" data-testid="raw">
                <summary>{label}</summary>
                <pre>{json}</pre>
            </details>
        }
        .into_any(),
    }
}

/// A row's texts as markdown, once the server has rendered them (they are keyed by row and
/// position); until then, and if rendering fails, as they came.
pub(crate) fn rendered_texts(
    ctx: RoomCtx,
    key: &str,
    texts: Vec<String>,
    class: &'static str,
) -> impl IntoView + use<> {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let k = ToolView::text_key(key, i);
            let html = move || ctx.rendered.with(|r| r.get(&k).cloned());
            view! {
                {move || match html() {
                    Some(html) => view! { <div class=format!("markdown {class}") inner_html=html></div> }.into_any(),
                    None => view! { <pre class="tool-output">{t.clone()}</pre> }.into_any(),
                }}
            }
        })
        .collect_view()
}

/// A message's text with the `@Name` of each person it mentions highlighted.
fn mentioned_text(text: &str, mentions: &[crate::model::Mention]) -> Vec<AnyView> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let next = mentions
            .iter()
            .filter_map(|m| {
                let tag = format!("@{}", m.display_name);
                rest.find(&tag).map(|at| (at, tag, m.person_id.clone()))
            })
            .min_by_key(|(at, tag, _)| (*at, std::cmp::Reverse(tag.len())));
        let Some((at, tag, person)) = next else {
            parts.push(rest.to_string().into_any());
            return parts;
        };
        parts.push(rest[..at].to_string().into_any());
        parts.push(
            view! { <mark class="mention" data-testid="mention" data-person=person>{tag.clone()}</mark> }
                .into_any(),
        );
        rest = &rest[at + tag.len()..];
    }
}
