//! The agent's markdown, rendered to HTML and sanitised on the server: scripts, event handlers and
//! unsafe URLs never reach a page.

use pulldown_cmark::{Options, Parser, html};

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
    let mut out = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut out, Parser::new_ext(text, options));
    ammonia::Builder::default().clean(&out).to_string()
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
}
