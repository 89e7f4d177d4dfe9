use serde::Deserialize;

/// An RFC 7807 problem document, as sandbox-agent answers errors.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AcpError {
    #[error("sandbox-agent answered {status}: {}", .problem.detail.as_deref().unwrap_or(&.problem.title))]
    Http { status: u16, problem: Problem },
    #[error("sandbox-agent is unreachable: {0}")]
    Unreachable(String),
    #[error("the request to sandbox-agent timed out")]
    Timeout,
    #[error("the ACP connection is gone: {0}")]
    ConnectionGone(String),
    /// The server does not know the connection (it restarted): what was posted never arrived.
    #[error("sandbox-agent no longer knows this connection: {0}")]
    UnknownConnection(String),
    #[error("the agent answered with JSON-RPC error {code}: {message}")]
    Rpc {
        code: i64,
        message: String,
        data: Option<serde_json::Value>,
    },
    #[error("malformed envelope from sandbox-agent: {0}")]
    Malformed(String),
    #[error("persistence failed: {0}")]
    Persist(String),
    #[error("{0}")]
    Invalid(String),
}

impl AcpError {
    /// Whether the remote side no longer knows the connection, so a new one must be made.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            AcpError::ConnectionGone(_) | AcpError::UnknownConnection(_)
        )
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            AcpError::Timeout
        } else {
            AcpError::Unreachable(e.to_string())
        }
    }
}
