//! A tool call's card: its status, output and diffs.

use leptos::prelude::*;

use crate::timeline::{DiffView, LineKind, ToolView};
use crate::ui::room::RoomCtx;
use crate::ui::room::rows::rendered_texts;

#[component]
pub(crate) fn ToolCard(tool: ToolView, key: String) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    let ToolView {
        title,
        kind,
        status,
        diffs,
        text,
        terminal,
        ..
    } = tool;
    // Finished calls' text is rendered as markdown once (Claude fences command output); until
    // then, and if rendering fails, it shows as it came.
    let texts = rendered_texts(ctx, &key, text, "tool-text");
    // A terminal that has shown nothing yet (a call waiting for permission) takes no room.
    let terminal = terminal.filter(|t| !t.output.is_empty() || t.exit.is_some()).map(|t| {
        view! {
            <div class="terminal" data-testid="terminal">
                {(!t.output.is_empty()).then(|| view! { <pre>{t.output}</pre> })}
                {t.exit.map(|e| view! { <p class="terminal-exit" data-testid="terminal-exit">{e}</p> })}
            </div>
        }
    });
    view! {
        <section class="card tool" data-testid="tool-call" data-status=status.as_str()>
            <header>
                <h3>{title}</h3>
                <span class="badge">{kind}</span>
                <span class=format!("badge status-{}", status.as_str())>{status.label()}</span>
            </header>
            {diffs.into_iter().map(|d| view! { <Diff d /> }).collect_view()}
            {terminal}
            {texts}
        </section>
    }
}

#[component]
pub(crate) fn Diff(d: DiffView) -> impl IntoView {
    let (added, removed) = d.counts();
    let hunks = d.hunks.into_iter().map(|hunk| {
        let lines = hunk.lines.into_iter().map(|l| {
            let (class, sign) = match l.kind {
                LineKind::Context => ("ctx", " "),
                LineKind::Removed => ("del", "-"),
                LineKind::Added => ("add", "+"),
            };
            view! {
                <tr class=class data-testid="diff-line">
                    <td class="ln">{l.old}</td>
                    <td class="ln">{l.new}</td>
                    <td class="code">{sign} " " {l.text}</td>
                </tr>
            }
        });
        view! { <tbody class="hunk">{lines.collect_view()}</tbody> }
    });
    view! {
        <div class="diff" data-testid="diff">
            <div class="path">
                {d.path}
                {d.created.then_some(" (new file)")}
                <span class="diff-counts">
                    <span class="add">"+" {added}</span> " " <span class="del">"−" {removed}</span>
                </span>
            </div>
            <div class="diff-body">
                <table class="diff-lines">{hunks.collect_view()}</table>
            </div>
        </div>
    }
}
