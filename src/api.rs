//! The JSON API: Leptos server functions with fixed endpoints, callable from the UI, scripts and bots.
//! Each one is thin: it validates input and hands the work to the server through context.

use leptos::prelude::*;
use server_fn::codec::Json;

pub use crate::error::{ApiError, ErrorCode};

use crate::model::{CreatedWorkspace, WorkspaceSummary};

/// Creates a workspace with the given agent (`mock` when none is given).
#[server(prefix = "/api", endpoint = "workspace/create", input = Json, output = Json)]
pub async fn create_workspace(
    #[server(default)] agent: Option<String>,
) -> Result<CreatedWorkspace, ApiError> {
    let state = crate::state::state()?;
    state.create_workspace(agent.as_deref()).await
}

/// What the page of a workspace shows about it.
#[server(prefix = "/api", endpoint = "workspace/get", input = Json, output = Json)]
pub async fn get_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<WorkspaceSummary, ApiError> {
    let state = crate::state::state()?;
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
    Ok(crate::state::state()?
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
    crate::state::state()?
        .prompt(&workspace_id, member, text)
        .await
        .map(|seq| crate::model::PromptAccepted { seq })
}

/// Stops the running turn (and, with `clearQueue`, drops the prompts waiting behind it); the
/// session lives on.
#[server(prefix = "/api", endpoint = "workspace/cancel", input = Json, output = Json)]
pub async fn cancel(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "userId")] user_id: String,
    #[server(default)]
    #[server(rename = "displayName")]
    display_name: Option<String>,
    #[server(default)]
    #[server(rename = "clearQueue")]
    clear_queue: bool,
) -> Result<(), ApiError> {
    let member = member_named_or_id(user_id, display_name)?;
    Ok(crate::state::state()?
        .registry()
        .cancel(&workspace_id, member, clear_queue)
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
    let registry = crate::state::state()?.registry().clone();
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
    Ok(crate::state::state()?
        .registry()
        .typing(&workspace_id, member)
        .await?)
}

/// Everything the page of a workspace renders: its state and its whole room log.
#[server(prefix = "/api", endpoint = "workspace/snapshot", input = Json, output = Json)]
pub async fn room_snapshot(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::RoomSnapshot, ApiError> {
    crate::state::state()?.room_snapshot(&workspace_id).await
}

/// Renders an agent message's markdown to sanitised HTML.
#[server(prefix = "/api", endpoint = "markdown", input = Json, output = Json)]
pub async fn render_markdown(text: String) -> Result<String, ApiError> {
    Ok(crate::markdown::render(&text))
}

/// The agents sandbox-agent offers, with whether each is installed and has credentials.
#[server(prefix = "/api", endpoint = "agents", input = Json, output = Json)]
pub async fn list_agents() -> Result<Vec<crate::model::AgentChoice>, ApiError> {
    Ok(crate::state::state()?.agents().await)
}
