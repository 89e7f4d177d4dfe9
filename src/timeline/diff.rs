//! An edit's diff as people read one: computed line by line (with `similar`), in hunks with three
//! lines of context and both files' line numbers, so a one-word change in a long file shows as
//! that line, not as the whole file removed and added again.

use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

/// Lines of context around each change.
const CONTEXT: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffView {
    /// Relative to the working directory when it is inside it.
    pub path: String,
    /// The agent made the file (it sent no old text).
    pub created: bool,
    pub hunks: Vec<Hunk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hunk {
    pub lines: Vec<DiffLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineKind {
    Context,
    Removed,
    Added,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffLine {
    pub kind: LineKind,
    /// 1-based line numbers in the old and the new file (None where the line is not in it).
    pub old: Option<u32>,
    pub new: Option<u32>,
    pub text: String,
}

impl DiffView {
    pub fn new(path: String, old_text: Option<&str>, new_text: &str) -> Self {
        let diff = TextDiff::from_lines(old_text.unwrap_or(""), new_text);
        let hunks = diff
            .grouped_ops(CONTEXT)
            .iter()
            .map(|group| Hunk {
                lines: group
                    .iter()
                    .flat_map(|op| diff.iter_changes(op))
                    .map(|c| DiffLine {
                        kind: match c.tag() {
                            ChangeTag::Equal => LineKind::Context,
                            ChangeTag::Delete => LineKind::Removed,
                            ChangeTag::Insert => LineKind::Added,
                        },
                        old: c.old_index().map(|i| i as u32 + 1),
                        new: c.new_index().map(|i| i as u32 + 1),
                        text: c.value().trim_end_matches(['\n', '\r']).to_string(),
                    })
                    .collect(),
            })
            .collect();
        DiffView {
            path,
            created: old_text.is_none(),
            hunks,
        }
    }

    /// (lines added, lines removed)
    pub fn counts(&self) -> (usize, usize) {
        let lines = self.hunks.iter().flat_map(|h| &h.lines);
        lines.fold((0, 0), |(a, r), l| match l.kind {
            LineKind::Added => (a + 1, r),
            LineKind::Removed => (a, r + 1),
            LineKind::Context => (a, r),
        })
    }

    /// About how many bytes it takes on a page.
    pub fn bytes(&self) -> usize {
        self.hunks
            .iter()
            .flat_map(|h| &h.lines)
            .map(|l| l.text.len() + 16)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_word_change_in_a_long_file_is_one_line_with_context_and_numbers() {
        let old: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 20\n", "line twenty\n");
        let d = DiffView::new("notes.md".into(), Some(&old), &new);
        assert_eq!(d.counts(), (1, 1));
        assert_eq!(d.hunks.len(), 1);
        let lines = &d.hunks[0].lines;
        assert_eq!(lines.len(), 3 + 2 + 3, "three lines of context each side");
        let removed = lines.iter().find(|l| l.kind == LineKind::Removed).unwrap();
        assert_eq!(
            (removed.old, removed.new, removed.text.as_str()),
            (Some(20), None, "line 20")
        );
        let added = lines.iter().find(|l| l.kind == LineKind::Added).unwrap();
        assert_eq!(
            (added.old, added.new, added.text.as_str()),
            (None, Some(20), "line twenty")
        );
        assert_eq!(lines[0].old, Some(17));
        // Two changes far apart are two hunks.
        let far = new.replace("line 1\n", "line one\n");
        assert_eq!(DiffView::new("n".into(), Some(&old), &far).hunks.len(), 2);
        // A new file is all added.
        let created = DiffView::new("n".into(), None, "a\nb\n");
        assert!(created.created);
        assert_eq!(created.counts(), (2, 0));
    }
}
