use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::model::{Sender, SessionEvent};

/// The SDK's SessionRecord.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub id: String,
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    pub last_connection_id: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_init: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The id of a JSON-RPC message, as a string key (numbers and strings alike).
pub(crate) fn envelope_id(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(crate) fn envelope_method(v: &Value) -> Option<&str> {
    v.get("method")?.as_str()
}

/// A response carries an id and a result or an error, and no method.
pub(crate) fn is_response(v: &Value) -> bool {
    envelope_method(v).is_none()
        && envelope_id(v).is_some()
        && (v.get("result").is_some() || v.get("error").is_some())
}

/// Checks that a value is a JSON-RPC 2.0 message of some kind.
pub(crate) fn validate_envelope(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("missing \"jsonrpc\": \"2.0\"".into());
    }
    if let Some(m) = obj.get("method") {
        if !m.is_string() {
            return Err("\"method\" is not a string".into());
        }
        return Ok(());
    }
    if is_response(v) {
        Ok(())
    } else {
        Err("neither a request, a notification nor a response".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_envelopes() {
        assert!(is_response(&json!({"jsonrpc":"2.0","id":1,"result":{}})));
        assert!(!is_response(&json!({"jsonrpc":"2.0","id":1,"method":"x"})));
        assert_eq!(envelope_id(&json!({"id":"a"})).as_deref(), Some("a"));
        assert_eq!(envelope_id(&json!({"id":7})).as_deref(), Some("7"));
        assert!(validate_envelope(&json!({"jsonrpc":"2.0","method":"m"})).is_ok());
        assert!(validate_envelope(&json!([1, 2])).is_err());
        assert!(validate_envelope(&json!({"jsonrpc":"2.0","id":3})).is_err());
        assert!(validate_envelope(&json!({"id":3,"result":1})).is_err());
    }
}
