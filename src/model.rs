//! Types shared by the server and the browser: what the UI and the JSON API speak.

use serde::{Deserialize, Serialize};

/// Longest prompt a teammate may send, in characters.
pub const MAX_PROMPT_CHARS: usize = 16_000;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest agent id accepted when creating a workspace.
pub const MAX_AGENT_CHARS: usize = 64;
/// The agent a workspace gets when none is asked for: needs no credentials.
pub const DEFAULT_AGENT: &str = "mock";

/// A workspace as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSummary {
    pub workspace_id: String,
    pub agent: String,
    pub sandbox_id: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// Answer of `POST /api/workspace/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWorkspace {
    pub workspace_id: String,
    pub url: String,
}

/// Workspace ids are 32 lowercase hex digits of a random (v4) UUID: 122 random bits, URL-safe.
pub fn is_valid_workspace_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The page of a workspace.
pub fn workspace_url(id: &str) -> String {
    format!("/w/{id}")
}

/// Agent ids are short slugs such as `mock`, `claude` or `codex`.
pub fn is_valid_agent_id(agent: &str) -> bool {
    !agent.is_empty()
        && agent.len() <= MAX_AGENT_CHARS
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_are_strict() {
        assert!(is_valid_workspace_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_workspace_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_valid_workspace_id("0123456789abcdef"));
        assert!(!is_valid_workspace_id("../../etc/passwd"));
        assert!(!is_valid_workspace_id(""));
    }

    #[test]
    fn agent_ids_are_slugs() {
        assert!(is_valid_agent_id("mock"));
        assert!(is_valid_agent_id("claude-code"));
        assert!(!is_valid_agent_id(""));
        assert!(!is_valid_agent_id("a b"));
        assert!(!is_valid_agent_id(&"x".repeat(65)));
    }
}
