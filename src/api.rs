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
    Conflict,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status an error with this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
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
