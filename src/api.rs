//! The JSON API: Leptos server functions with fixed endpoints, callable from the UI, scripts and bots.
//! Each one is thin: it validates input and hands the work to the server through context.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use server_fn::codec::{Json, JsonEncoding};
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

use crate::model::{CreatedWorkspace, WorkspaceSummary};

/// Stable, machine-readable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    /// Another Huddle process owns the workspace now.
    OwnedElsewhere,
    Timeout,
    Internal,
}

impl ErrorCode {
    /// The HTTP status an error with this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable | ErrorCode::OwnedElsewhere => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

/// Every API error: a stable code and a message meant for people. Internal details are logged on the
/// server, never put here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "Something went wrong on the server; it has been logged.",
        )
    }
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(m)
            | ServerFnErrorErr::MissingArg(m)
            | ServerFnErrorErr::Deserialization(m) => {
                // Parser messages can quote the input: keep them short.
                let m: String = m.chars().take(200).collect();
                Self::bad_request(format!("Malformed request: {m}"))
            }
            ServerFnErrorErr::Request(m) | ServerFnErrorErr::Response(m) => Self::new(
                ErrorCode::Unavailable,
                format!("Could not reach the server: {m}"),
            ),
            other => Self::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

/// Creates a workspace with the given agent (`mock` when none is given).
#[server(prefix = "/api", endpoint = "workspace/create", input = Json, output = Json)]
pub async fn create_workspace(
    #[server(default)] agent: Option<String>,
) -> Result<CreatedWorkspace, ApiError> {
    let state = crate::server::state()?;
    state.create_workspace(agent.as_deref()).await
}

/// What the page of a workspace shows about it.
#[server(prefix = "/api", endpoint = "workspace/get", input = Json, output = Json)]
pub async fn get_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<WorkspaceSummary, ApiError> {
    let state = crate::server::state()?;
    state.workspace(&workspace_id).await
}

/// Checks a teammate's identity as sent by a page or a script.
fn member(user_id: String, display_name: String) -> Result<crate::model::Member, ApiError> {
    use crate::model::MAX_NAME_CHARS;
    let user_id = user_id.trim().to_string();
    let display_name = display_name.trim().to_string();
    if user_id.is_empty() || user_id.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "userId must be 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    if display_name.is_empty() || display_name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "displayName must be 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    if user_id
        .chars()
        .chain(display_name.chars())
        .any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "userId and displayName cannot contain control characters (such as NUL or a line break).",
        ));
    }
    Ok(crate::model::Member {
        user_id,
        display_name,
    })
}

/// Like [`member`], for actions whose display name is optional: the user id stands in for it.
#[cfg(feature = "ssr")]
fn member_named_or_id(
    user_id: String,
    display_name: Option<String>,
) -> Result<crate::model::Member, ApiError> {
    let name = display_name.unwrap_or_else(|| user_id.clone());
    member(user_id, name)
}

/// Checks a prompt: who sends it, and that its text is neither empty nor too long.
pub fn check_prompt(
    user_id: String,
    display_name: String,
    text: String,
) -> Result<(crate::model::Member, String), ApiError> {
    use crate::model::MAX_PROMPT_CHARS;
    let member = member(user_id, display_name)?;
    let text = text.trim_end().to_string();
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("The message is empty."));
    }
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::bad_request(format!(
            "The message is {chars} characters long; the limit is {MAX_PROMPT_CHARS}."
        )));
    }
    Ok((member, text))
}

/// The workspace's session and who is in the room.
#[server(prefix = "/api", endpoint = "workspace/info", input = Json, output = Json)]
pub async fn workspace_info(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::WorkspaceInfo, ApiError> {
    Ok(crate::server::state()?
        .registry()
        .info(&workspace_id)
        .await?)
}

/// Posts a teammate's message to the room and prompts the agent with it (queued while a turn runs).
#[server(prefix = "/api", endpoint = "workspace/prompt", input = Json, output = Json)]
pub async fn prompt(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "userId")] user_id: String,
    #[server(rename = "displayName")] display_name: String,
    text: String,
) -> Result<crate::model::PromptAccepted, ApiError> {
    let (member, text) = check_prompt(user_id, display_name, text)?;
    let seq = crate::server::state()?
        .registry()
        .prompt(&workspace_id, member, text)
        .await?;
    Ok(crate::model::PromptAccepted { seq })
}

/// Stops the running turn; the session lives on.
#[server(prefix = "/api", endpoint = "workspace/cancel", input = Json, output = Json)]
pub async fn cancel(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "userId")] user_id: String,
    #[server(default)]
    #[server(rename = "displayName")]
    display_name: Option<String>,
) -> Result<(), ApiError> {
    let member = member_named_or_id(user_id, display_name)?;
    Ok(crate::server::state()?
        .registry()
        .cancel(&workspace_id, member)
        .await?)
}

/// Answers a permission request of the agent; the first answer wins.
#[server(prefix = "/api", endpoint = "workspace/permission", input = Json, output = Json)]
pub async fn answer_permission(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "userId")] user_id: String,
    #[server(default)]
    #[server(rename = "displayName")]
    display_name: Option<String>,
    #[server(rename = "requestId")] request_id: String,
    #[server(rename = "optionId")] option_id: String,
) -> Result<(), ApiError> {
    let member = member_named_or_id(user_id, display_name)?;
    let registry = crate::server::state()?.registry().clone();
    Ok(registry
        .answer_permission(&workspace_id, member, request_id, option_id)
        .await?)
}

/// Tells the room someone is typing (not kept in the log).
#[server(prefix = "/api", endpoint = "workspace/typing", input = Json, output = Json)]
pub async fn typing(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "userId")] user_id: String,
    #[server(rename = "displayName")] display_name: String,
) -> Result<(), ApiError> {
    let member = member(user_id, display_name)?;
    Ok(crate::server::state()?
        .registry()
        .typing(&workspace_id, member)
        .await?)
}

/// Everything the page of a workspace renders: its state and its whole room log.
#[server(prefix = "/api", endpoint = "workspace/snapshot", input = Json, output = Json)]
pub async fn room_snapshot(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::RoomSnapshot, ApiError> {
    let state = crate::server::state()?;
    let info = state.registry().info(&workspace_id).await?;
    let entries =
        crate::store::room_log::list(state.pool(), &workspace_id, 0, info.head, i64::MAX).await?;
    let timeline = crate::timeline::build(&entries);
    let rendered = crate::timeline::finished_agent_texts(&timeline)
        .into_iter()
        .map(|(key, text)| (key, crate::markdown::render(&text)))
        .collect();
    Ok(crate::model::RoomSnapshot {
        info,
        entries,
        rendered,
    })
}

/// Renders an agent message's markdown to sanitised HTML.
#[server(prefix = "/api", endpoint = "markdown", input = Json, output = Json)]
pub async fn render_markdown(text: String) -> Result<String, ApiError> {
    Ok(crate::markdown::render(&text))
}

/// The agents sandbox-agent offers, with whether each is installed and has credentials.
#[server(prefix = "/api", endpoint = "agents", input = Json, output = Json)]
pub async fn list_agents() -> Result<Vec<crate::model::AgentChoice>, ApiError> {
    let state = crate::server::state()?;
    let mut agents: Vec<crate::model::AgentChoice> =
        match state.registry().sandbox().list_agents().await {
            Ok(list) => list
                .into_iter()
                .map(|a| crate::model::AgentChoice {
                    id: a.id,
                    installed: a.installed,
                    credentials_available: a.credentials_available,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list agents");
                Vec::new()
            }
        };
    // The mock is always there: the embedded server installs it, and it needs no credentials.
    if !agents.iter().any(|a| a.id == crate::model::DEFAULT_AGENT) {
        agents.push(crate::model::AgentChoice {
            id: crate::model::DEFAULT_AGENT.into(),
            installed: true,
            credentials_available: true,
        });
    }
    Ok(agents)
}
