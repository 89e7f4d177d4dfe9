//! The ACP messages Huddle sends and the replies it reads, built and read with the
//! `agent-client-protocol-schema` types (v1), so that their shapes come from the protocol's own
//! definitions. Envelopes travel as JSON values: what is recorded is exactly what was sent.

use std::path::PathBuf;

use agent_client_protocol_schema::ProtocolVersion;
use agent_client_protocol_schema::v1::{
    AGENT_METHOD_NAMES, CancelNotification, ClientCapabilities, ContentBlock, ForkSessionRequest,
    ImageContent, Implementation, InitializeRequest, InitializeResponse, LoadSessionRequest,
    NewSessionRequest, NewSessionResponse, PromptRequest, PromptResponse, RequestPermissionOutcome,
    RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome,
    SetSessionConfigOptionRequest, SetSessionModeRequest, TextContent,
};
use serde::Serialize;
use serde_json::Value;

pub(crate) fn method_initialize() -> &'static str {
    AGENT_METHOD_NAMES.initialize
}
pub(crate) fn method_new_session() -> &'static str {
    AGENT_METHOD_NAMES.session_new
}
pub(crate) fn method_load_session() -> &'static str {
    AGENT_METHOD_NAMES.session_load
}
pub(crate) fn method_set_config_option() -> &'static str {
    AGENT_METHOD_NAMES.session_set_config_option
}
pub(crate) fn method_set_mode() -> &'static str {
    AGENT_METHOD_NAMES.session_set_mode
}
pub(crate) fn method_prompt() -> &'static str {
    AGENT_METHOD_NAMES.session_prompt
}
pub(crate) fn method_cancel() -> &'static str {
    AGENT_METHOD_NAMES.session_cancel
}

fn to_value(v: impl Serialize) -> Value {
    serde_json::to_value(v).expect("ACP types serialise")
}

/// `initialize`: Huddle offers the agent no file system and no terminal of its own, and asks for
/// the output of the agent's own terminals (`_meta.terminal_output`, which Claude Code's and
/// Codex's adapters send only when asked), so the room can show it.
pub(crate) fn initialize() -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert("terminal_output".into(), Value::Bool(true));
    to_value(
        InitializeRequest::new(ProtocolVersion::V1)
            .client_capabilities(ClientCapabilities::default().meta(meta))
            .client_info(Implementation::new("huddle", env!("CARGO_PKG_VERSION"))),
    )
}

/// `session/new` in `cwd` with no MCP servers.
pub(crate) fn new_session(cwd: impl Into<PathBuf>) -> Value {
    to_value(NewSessionRequest::new(cwd).mcp_servers(Vec::new()))
}

/// Whether the agent's `initialize` answer says it can reopen a session with `session/load`.
pub(crate) fn can_load_session(initialized: &Value) -> bool {
    serde_json::from_value::<InitializeResponse>(initialized.clone())
        .map(|r| r.agent_capabilities.load_session)
        .unwrap_or(false)
}

/// Whether the agent's `initialize` answer says it can fork a session (`session/fork`).
pub(crate) fn can_fork_session(initialized: &Value) -> bool {
    serde_json::from_value::<InitializeResponse>(initialized.clone())
        .map(|r| r.agent_capabilities.session_capabilities.fork.is_some())
        .unwrap_or(false)
}

pub(crate) fn method_fork_session() -> &'static str {
    AGENT_METHOD_NAMES.session_fork
}

/// `session/fork` of the agent's own session `session_id`, with what `session/new` would have
/// been given (`cwd`, MCP servers): a new session that starts with that one's conversation.
pub(crate) fn fork_session(session_id: &str, new_session: &Value) -> Value {
    with_servers(
        to_value(ForkSessionRequest::new(
            session_id.to_string(),
            cwd_of(new_session),
        )),
        new_session,
    )
}

/// The working directory `session/new` was given.
fn cwd_of(new_session: &Value) -> String {
    new_session
        .get("cwd")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string()
}

/// A request with the MCP servers `session/new` was given.
fn with_servers(mut request: Value, new_session: &Value) -> Value {
    if let Some(servers) = new_session.get("mcpServers") {
        request["mcpServers"] = servers.clone();
    }
    request
}

/// `session/load` of the agent's own session, with what `session/new` was given (`cwd`, MCP
/// servers).
pub(crate) fn load_session(session_id: &str, new_session: &Value) -> Value {
    with_servers(
        to_value(LoadSessionRequest::new(
            session_id.to_string(),
            cwd_of(new_session),
        )),
        new_session,
    )
}

/// `session/set_config_option` of a select option.
pub(crate) fn set_config_option(session_id: &str, config_id: &str, value: &str) -> Value {
    to_value(SetSessionConfigOptionRequest::new(
        session_id.to_string(),
        config_id.to_string(),
        value,
    ))
}

/// `session/set_mode`, for agents that offer a mode list rather than a mode option.
pub(crate) fn set_mode(session_id: &str, mode_id: &str) -> Value {
    to_value(SetSessionModeRequest::new(
        session_id.to_string(),
        mode_id.to_string(),
    ))
}

/// The id under which a legacy mode list (`modes`, changed with `session/set_mode`) is chosen.
pub const LEGACY_MODE: &str = "_mode";

/// The current value of each option a session's opening answer (`session/new`, `session/load`)
/// or its `config_option_update` / `current_mode_update` names: (config id, value), the mode also
/// under [`LEGACY_MODE`].
/// The session title an agent's `session_info_update` sets: `Some("")` when it clears it.
pub fn session_title(payload: &Value) -> Option<String> {
    use agent_client_protocol_schema::MaybeUndefined;
    use agent_client_protocol_schema::v1::{SessionNotification, SessionUpdate};
    if payload.pointer("/params/update/sessionUpdate")?.as_str()? != "session_info_update" {
        return None;
    }
    let n: SessionNotification = serde_json::from_value(payload.get("params")?.clone()).ok()?;
    match n.update {
        SessionUpdate::SessionInfoUpdate(u) => match u.title {
            MaybeUndefined::Value(t) => Some(t),
            MaybeUndefined::Null => Some(String::new()),
            MaybeUndefined::Undefined => None,
        },
        _ => None,
    }
}

pub fn current_options(payload: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let update = payload.pointer("/params/update");
    let holder = payload.get("result").or(update).unwrap_or(&Value::Null);
    if let Some(options) = holder.get("configOptions").and_then(Value::as_array) {
        for o in options {
            if let (Some(id), Some(value)) = (
                o.get("id").and_then(Value::as_str),
                o.get("currentValue").and_then(Value::as_str),
            ) {
                out.push((id.to_string(), value.to_string()));
            }
        }
    }
    let mode = holder
        .pointer("/modes/currentModeId")
        .or_else(|| update.and_then(|u| u.get("currentModeId")))
        .and_then(Value::as_str);
    if let Some(mode) = mode {
        out.push((LEGACY_MODE.to_string(), mode.to_string()));
        if !out.iter().any(|(id, _)| id == "mode") {
            out.push(("mode".to_string(), mode.to_string()));
        }
    }
    out
}

/// The agent's id for the new session; None when its answer has none (the builtin mock).
pub(crate) fn new_session_id(result: Value) -> Option<String> {
    serde_json::from_value::<NewSessionResponse>(result)
        .ok()
        .map(|r| r.session_id.to_string())
}

/// `session/prompt` with text blocks.
pub(crate) fn prompt(session_id: &str, blocks: Vec<PromptBlock>) -> Value {
    let blocks = blocks
        .into_iter()
        .map(|b| match b {
            PromptBlock::Text(t) => ContentBlock::Text(TextContent::new(t)),
            PromptBlock::Image { mime_type, data } => {
                ContentBlock::Image(ImageContent::new(data, mime_type))
            }
        })
        .collect();
    to_value(PromptRequest::new(session_id.to_string(), blocks))
}

/// A block of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptBlock {
    Text(String),
    /// An image, its bytes in base64.
    Image {
        mime_type: String,
        data: String,
    },
}

/// Whether the agent's `initialize` answer says it takes images in prompts.
pub(crate) fn takes_images(initialized: &Value) -> bool {
    serde_json::from_value::<InitializeResponse>(initialized.clone())
        .map(|r| r.agent_capabilities.prompt_capabilities.image)
        .unwrap_or(false)
}

/// Why a turn ended, as the protocol spells it (`end_turn` when the answer says nothing known).
pub(crate) fn stop_reason(result: Value) -> String {
    serde_json::from_value::<PromptResponse>(result)
        .ok()
        .and_then(|r| serde_json::to_value(r.stop_reason).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "end_turn".into())
}

/// `session/cancel`.
pub(crate) fn cancel(session_id: &str) -> Value {
    to_value(CancelNotification::new(session_id.to_string()))
}

/// The answer to a permission request: the option chosen.
pub(crate) fn permission_selected(option_id: &str) -> Value {
    let outcome = SelectedPermissionOutcome::new(option_id.to_string());
    to_value(RequestPermissionResponse::new(
        RequestPermissionOutcome::Selected(outcome),
    ))
}

/// The answer to a permission request that was not answered (the turn was stopped).
pub(crate) fn permission_cancelled() -> Value {
    to_value(RequestPermissionResponse::new(
        RequestPermissionOutcome::Cancelled,
    ))
}

/// Whether `option_id` is one of the request's options. A request the schema does not fully
/// accept is still answerable by its option ids: an agent's quirk must not strand a turn.
pub(crate) fn offers_option(params: &Value, option_id: &str) -> bool {
    match serde_json::from_value::<RequestPermissionRequest>(params.clone()) {
        Ok(r) => r
            .options
            .iter()
            .any(|o| o.option_id.to_string() == option_id),
        Err(e) => {
            tracing::warn!(error = %e, "permission request outside the ACP schema");
            params["options"]
                .as_array()
                .is_some_and(|opts| opts.iter().any(|o| o["optionId"] == option_id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_have_the_protocol_shapes() {
        assert_eq!(initialize()["protocolVersion"], 1);
        assert_eq!(initialize()["clientInfo"]["name"], "huddle");
        assert_eq!(
            new_session("/tmp"),
            json!({"cwd": "/tmp", "mcpServers": []})
        );
        assert_eq!(
            prompt("s", vec![PromptBlock::Text("hi".into())]),
            json!({"sessionId": "s", "prompt": [{"type": "text", "text": "hi"}]})
        );
        assert_eq!(cancel("s"), json!({"sessionId": "s"}));
        assert_eq!(
            permission_selected("allow"),
            json!({"outcome": {"outcome": "selected", "optionId": "allow"}})
        );
        assert_eq!(
            permission_cancelled(),
            json!({"outcome": {"outcome": "cancelled"}})
        );
        assert_eq!(stop_reason(json!({"stopReason": "cancelled"})), "cancelled");
        assert_eq!(stop_reason(json!({})), "end_turn");
        assert_eq!(
            new_session_id(json!({"sessionId": "x"})).as_deref(),
            Some("x")
        );
        assert_eq!(new_session_id(json!({})), None);
        let request = json!({"sessionId": "s", "toolCall": {"toolCallId": "t"},
            "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"}]});
        assert!(offers_option(&request, "allow"));
        assert!(!offers_option(&request, "nope"));
    }

    #[test]
    fn current_options_are_read_from_answers_and_updates() {
        let opened = json!({"result": {"sessionId": "s",
            "modes": {"currentModeId": "default", "availableModes": []},
            "configOptions": [{"id": "model", "name": "Model", "type": "select",
                "currentValue": "sonnet", "options": []}]}});
        assert_eq!(
            current_options(&opened),
            [
                ("model".into(), "sonnet".into()),
                ("_mode".into(), "default".into()),
                ("mode".into(), "default".into())
            ]
        );
        let update = json!({"method": "session/update", "params": {"sessionId": "s",
            "update": {"sessionUpdate": "current_mode_update", "currentModeId": "plan"}}});
        assert_eq!(
            current_options(&update),
            [
                ("_mode".into(), "plan".into()),
                ("mode".into(), "plan".into())
            ]
        );
        assert!(current_options(&json!({"result": {}})).is_empty());
    }
}
