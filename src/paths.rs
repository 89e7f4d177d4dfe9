//! Paths on the machine shown relative to the agent's working directory: the room reads
//! `notes.md`, not `/srv/huddle/data/workspaces/<id>/notes.md`, and viewers, who may not know
//! where the workspace lives, get no absolute path of it at all.

use std::borrow::Cow;

use serde_json::Value;

/// `text` with the working directory's paths made relative: `<dir>/x` becomes `x`, `<dir>` alone
/// becomes `.`.
pub fn relative<'a>(text: &'a str, dir: &str) -> Cow<'a, str> {
    let dir = dir.trim_end_matches('/');
    if dir.len() < 2 || !text.contains(dir) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace(&format!("{dir}/"), "").replace(dir, "."))
}

/// Every string in `value` with [`relative`] paths; true when one changed.
pub fn relative_json(value: &mut Value, dir: &str) -> bool {
    match value {
        Value::String(s) => match relative(s, dir) {
            Cow::Owned(r) => {
                *s = r;
                true
            }
            Cow::Borrowed(_) => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| relative_json(v, dir) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| relative_json(v, dir) | changed),
        _ => false,
    }
}

/// Makes `s` relative in place.
pub fn make_relative(s: &mut String, dir: &str) {
    if let Cow::Owned(r) = relative(s, dir) {
        *s = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_in_the_working_directory_become_relative() {
        let dir = "/data/workspaces/abc";
        assert_eq!(
            relative("Edit /data/workspaces/abc/src/main.rs", dir),
            "Edit src/main.rs"
        );
        assert_eq!(relative("cd /data/workspaces/abc && ls", dir), "cd . && ls");
        assert_eq!(relative("/etc/hosts", dir), "/etc/hosts");
        assert!(matches!(relative("nothing", dir), Cow::Borrowed(_)));
        let mut v = json!({"a": ["/data/workspaces/abc/x"], "cwd": "/data/workspaces/abc", "n": 1});
        assert!(relative_json(&mut v, dir));
        assert_eq!(v, json!({"a": ["x"], "cwd": ".", "n": 1}));
    }
}
