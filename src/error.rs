//! The API's error: a stable code and a message meant for people, shared by the server and the
//! browser. Internal details are logged on the server, never put here.

use serde::{Deserialize, Serialize};
use server_fn::codec::JsonEncoding;
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

/// What someone sent, as an error message quotes it: a short prefix only, so that a huge or
/// hostile value neither comes back whole nor floods the answer.
pub fn quoted(sent: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = sent.chars().take(MAX).collect();
    if out.len() < sent.len() {
        out.push('…');
    }
    format!("`{out}`")
}

/// Stable, machine-readable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    /// No identity, or an API token that is not valid (mistyped or revoked).
    Unauthorized,
    /// Refused: a request from another site, or to another host name.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Too many prompts from one person in a minute, or too many open streams.
    RateLimited,
    /// The workspace's queue is full.
    QueueFull,
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
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited | ErrorCode::QueueFull => 429,
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
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// Said no, having recorded nothing (unlike an unavailable agent or database, or a timeout).
    pub fn refused(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::BadRequest
                | ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::Conflict
                | ErrorCode::PayloadTooLarge
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::RateLimited
                | ErrorCode::QueueFull
                | ErrorCode::OwnedElsewhere
        )
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
