//! Values Postgres `jsonb` refuses, stored losslessly in another form.
//!
//! jsonb cannot hold U+0000 in any string (`unsupported Unicode escape sequence`), and an agent
//! that reads a binary file sends exactly that. Such a value is kept as the base64 of its JSON
//! text inside a small wrapper object, and unwrapped when read: what comes back is what went in.
//! Agent output with lone UTF-16 surrogates never becomes a `Value` at all; the transport keeps its
//! original text beside a readable copy (see [`lenient_parse`]).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// The key of the wrapper object; nothing an agent sends is unwrapped unless it has exactly this
/// key and `data`.
const WRAPPER_KEY: &str = "$huddle:stored";
const WRAPPER_KIND: &str = "json-base64";

/// The key under which an envelope that was not valid JSON as sent keeps its original text.
pub const RAW_TEXT_KEY: &str = "_huddleRawText";

/// Whether any string or key in `v` holds a character jsonb refuses.
fn refused(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(refused),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || refused(v)),
        _ => false,
    }
}

/// The wrapper that always stores: the value's JSON text, base64-encoded.
pub fn wrap(v: &Value) -> Value {
    let text = serde_json::to_vec(v).unwrap_or_default();
    let mut o = Map::new();
    o.insert(WRAPPER_KEY.into(), Value::String(WRAPPER_KIND.into()));
    o.insert("data".into(), Value::String(STANDARD.encode(text)));
    Value::Object(o)
}

/// What to hand to jsonb: the value itself when it can hold it, else its wrapper.
pub fn storable(v: &Value) -> Cow<'_, Value> {
    if refused(v) {
        Cow::Owned(wrap(v))
    } else {
        Cow::Borrowed(v)
    }
}

/// The value as it was before [`storable`].
pub fn restore(v: Value) -> Value {
    let Value::Object(o) = &v else { return v };
    if o.len() != 2 || o.get(WRAPPER_KEY).and_then(Value::as_str) != Some(WRAPPER_KIND) {
        return v;
    }
    let decoded = o
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| STANDARD.decode(d).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    match decoded {
        Some(inner) => inner,
        None => v,
    }
}

/// Parses JSON text that may hold lone UTF-16 surrogate escapes (`"\ud800"`), which serde_json
/// (rightly) refuses: each lone one is read as U+FFFD, and the original text is kept under
/// [`RAW_TEXT_KEY`] when the result is an object, so nothing is lost. Text with any other fault
/// stays an error.
pub fn lenient_parse(text: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(first) => {
            let Some(repaired) = replace_lone_surrogates(text) else {
                return Err(first);
            };
            let mut v: Value = serde_json::from_str(&repaired)?;
            if let Value::Object(o) = &mut v {
                o.insert(RAW_TEXT_KEY.into(), Value::String(text.to_string()));
            }
            Ok(v)
        }
    }
}

/// The text with every unpaired `\uD800`–`\uDFFF` escape replaced by `\uFFFD`; None when there was
/// none to replace.
fn replace_lone_surrogates(text: &str) -> Option<String> {
    fn escape_at(b: &[u8], i: usize) -> Option<u16> {
        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(unit) = escape_at(b, i) {
                let high = (0xD800..0xDC00).contains(&unit);
                let low = (0xDC00..0xE000).contains(&unit);
                let paired = high
                    && escape_at(b, i + 6).is_some_and(|next| (0xDC00..0xE000).contains(&next));
                if paired {
                    i += 12;
                    continue;
                }
                if high || low {
                    out.push_str(&text[last..i]);
                    out.push_str("\\uFFFD");
                    changed = true;
                    i += 6;
                    last = i;
                    continue;
                }
                i += 6;
                continue;
            }
            // Any other escape: skip the escaped character so `\\u` is not read as an escape.
            i += 2;
            continue;
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_wrapped_and_restored_exactly() {
        let v = json!({"text": "a\u{0}b", "n": [1, {"k\u{0}": true}]});
        let stored = storable(&v).into_owned();
        assert_ne!(stored, v);
        assert!(!refused(&stored));
        assert_eq!(restore(stored), v);
        let plain = json!({"text": "fine"});
        assert!(matches!(storable(&plain), Cow::Borrowed(_)));
        assert_eq!(restore(plain.clone()), plain);
    }

    #[test]
    fn lone_surrogates_are_read_and_the_original_kept() {
        let text = r#"{"a":"x\ud800y","b":"\ud83d\ude00","c":"\\ud800","d":"\udc00"}"#;
        let v = lenient_parse(text).unwrap();
        assert_eq!(v["a"], "x\u{FFFD}y");
        assert_eq!(v["b"], "😀");
        assert_eq!(v["c"], "\\ud800");
        assert_eq!(v["d"], "\u{FFFD}");
        assert_eq!(v[RAW_TEXT_KEY], text);
        assert!(lenient_parse("{not json").is_err());
        assert_eq!(lenient_parse(r#"{"ok":1}"#).unwrap(), json!({"ok": 1}));
    }
}
