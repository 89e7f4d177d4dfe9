//! `@name` in the composer: while the word being typed at the end starts with `@`, the
//! workspace's people (and `@here`, everyone present) are offered; picking one writes `@Name` and
//! remembers the person's id, which goes with the message (a mention is a person, not text).

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::workspace_people;
use crate::model::Mentionable;

/// Everyone present in the thread.
const HERE: &str = "here";

#[derive(Clone, Copy)]
pub struct MentionPicker {
    ws: StoredValue<String>,
    people: RwSignal<Option<Vec<Mentionable>>>,
    /// The `@word` being typed (without its `@`), while there is one.
    query: RwSignal<Option<String>>,
    chosen: RwSignal<usize>,
    /// Picked so far for this message: (person id or `here`, the name written).
    picked: StoredValue<Vec<(String, String)>>,
}

impl MentionPicker {
    pub fn new(ws: String) -> Self {
        Self {
            ws: StoredValue::new(ws),
            people: RwSignal::new(None),
            query: RwSignal::new(None),
            chosen: RwSignal::new(0),
            picked: StoredValue::new(Vec::new()),
        }
    }

    /// The draft changed: is its last word an `@mention` being typed?
    pub fn typed(self, draft: &str) {
        let word = draft
            .rsplit(char::is_whitespace)
            .next()
            .and_then(|w| w.strip_prefix('@'))
            .filter(|w| w.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)));
        self.query.set(word.map(str::to_lowercase));
        self.chosen.set(0);
        if word.is_some() && self.people.with_untracked(Option::is_none) {
            // Fetched once per page, on the first `@`.
            self.people.set(Some(Vec::new()));
            let ws = self.ws.get_value();
            spawn_local(async move {
                if let Ok(p) = workspace_people(ws).await {
                    self.people.set(Some(p.people));
                }
            });
        }
    }

    /// What is offered now: (id, name).
    pub fn offered(self) -> Vec<(String, String)> {
        let Some(q) = self.query.get() else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = self.people.with(|p| {
            p.iter()
                .flatten()
                .filter(|p| p.display_name.to_lowercase().starts_with(&q))
                .take(8)
                .map(|p| (p.person_id.clone(), p.display_name.clone()))
                .collect()
        });
        if HERE.starts_with(&q) {
            out.push((HERE.into(), HERE.into()));
        }
        out
    }

    /// Keys while offering: ↑ ↓ choose, Enter or Tab pick, Esc closes. True when handled.
    pub fn key(
        self,
        ev: &leptos::ev::KeyboardEvent,
        text: NodeRef<leptos::html::Textarea>,
    ) -> bool {
        let offered = self.offered();
        if offered.is_empty() || ev.is_composing() {
            return false;
        }
        let n = offered.len();
        let at = self.chosen.get_untracked().min(n - 1);
        match ev.key().as_str() {
            "ArrowDown" => self.chosen.set((at + 1) % n),
            "ArrowUp" => self.chosen.set((at + n - 1) % n),
            "Enter" | "Tab" if !ev.shift_key() => self.pick(offered[at].clone(), text),
            "Escape" => self.query.set(None),
            _ => return false,
        }
        ev.prevent_default();
        true
    }

    /// Writes `@Name ` in place of the `@word` being typed, and remembers who it is.
    pub fn pick(self, (id, name): (String, String), text: NodeRef<leptos::html::Textarea>) {
        let Some(el) = text.get_untracked() else {
            return;
        };
        let value = el.value();
        let cut = value.rfind('@').unwrap_or(value.len());
        let written = format!("{}@{name} ", &value[..cut]);
        el.set_value(&written);
        let _ = el.focus();
        self.picked.update_value(|p| p.push((id, name)));
        self.query.set(None);
    }

    /// The ids of the people the message still mentions (their `@Name` is still in it).
    pub fn ids_in(self, text: &str) -> Vec<String> {
        let mut ids: Vec<String> = self.picked.with_value(|p| {
            p.iter()
                .filter(|(_, name)| text.contains(&format!("@{name}")))
                .map(|(id, _)| id.clone())
                .collect()
        });
        ids.dedup();
        ids
    }

    /// The message went: start afresh.
    pub fn clear(self) {
        self.picked.set_value(Vec::new());
        self.query.set(None);
    }
}

#[component]
pub fn MentionList(picker: MentionPicker, text: NodeRef<leptos::html::Textarea>) -> impl IntoView {
    view! {
        <Show when=move || !picker.offered().is_empty()>
            <ul class="palette mentions" data-testid="mention-list" role="listbox" aria-label="People to mention">
                {move || {
                    picker
                        .offered()
                        .into_iter()
                        .enumerate()
                        .map(|(i, (id, name))| {
                            let active = move || picker.chosen.get() == i;
                            let label = if id == HERE {
                                "@here · everyone present".to_string()
                            } else {
                                format!("@{name}")
                            };
                            view! {
                                <li role="option" aria-selected=move || active().to_string()>
                                    <button
                                        type="button"
                                        class="command"
                                        class:active=active
                                        tabindex="-1"
                                        data-testid="mention-option"
                                        on:click=move |_| picker.pick((id.clone(), name.clone()), text)
                                    >
                                        {label}
                                    </button>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
        </Show>
    }
}
