//! A client frame's first steps, shared by every protocol: JSON parsed once (invalid JSON, a
//! missing `type` and NUL characters are answered the same way everywhere), and the field rules
//! several protocols share (message text, a client's own message id).

use serde_json::{Map, Value};

use crate::errors::ClientError;

/// A client frame parsed as JSON, with its `type`. Shared first step of every protocol: invalid
/// JSON and a missing `type` are answered the same way everywhere.
pub(crate) struct ClientFrame {
    pub(crate) kind: String,
    pub(crate) body: Map<String, Value>,
}

/// Parses a client frame's JSON and refuses what the database could not store: the one
/// place every socket's frames go through first.
pub(crate) fn parse_json(text: &str) -> Result<Value, ClientError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ClientError::invalid_json())?;
    if has_nul(&value) {
        return Err(ClientError::invalid_payload(NUL_REFUSED));
    }
    Ok(value)
}

/// Why a frame or body with a NUL character is refused (the same words on sockets and the API).
pub(crate) const NUL_REFUSED: &str = "text must not contain NUL characters (\\u0000)";

/// True when any string (or key) in `value` has a NUL character, which PostgreSQL cannot store
/// in text: accepted, such a message would be delivered live and then never persisted.
pub(crate) fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl ClientFrame {
    pub(crate) fn parse(text: &str) -> Result<Self, ClientError> {
        let value = parse_json(text)?;
        let Value::Object(mut body) = value else { return Err(ClientError::unknown_type(None)) };
        match body.remove("type") {
            Some(Value::String(kind)) => Ok(Self { kind, body }),
            _ => Err(ClientError::unknown_type(None)),
        }
    }

    /// A required string field.
    pub(crate) fn string(&self, field: &str) -> Result<&str, ClientError> {
        match self.body.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a string"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }

    /// An optional string field (absent or `null` is `None`).
    pub(crate) fn optional_string(&self, field: &str) -> Result<Option<&str>, ClientError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a string"))),
        }
    }

    /// The object under `field` (chat.txt wraps its payloads in `data`), as a frame of its own.
    pub(crate) fn nested(&self, field: &str) -> Result<ClientFrame, ClientError> {
        match self.body.get(field) {
            Some(Value::Object(body)) => Ok(ClientFrame { kind: self.kind.clone(), body: body.clone() }),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be an object"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }

    /// A required boolean field.
    pub(crate) fn boolean(&self, field: &str) -> Result<bool, ClientError> {
        match self.body.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a boolean"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }
}

/// A client's own id for a message it sends (`client_message_id`, optional): 1-64 characters of
/// `A-Za-z0-9_-` (a UUID fits). A resend under the same id is not published again
/// (`publish_send`).
pub(crate) fn client_message_id(frame: &ClientFrame) -> Result<Option<String>, ClientError> {
    let Some(id) = frame.optional_string("client_message_id")? else { return Ok(None) };
    let valid = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ClientError::invalid_payload(
            "\"client_message_id\" must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
        ));
    }
    Ok(Some(id.to_owned()))
}

/// Message text: trimmed, then 1..=`max` Unicode scalar values.
pub(crate) fn message_text<'a>(field: &str, raw: &'a str, max: usize) -> Result<&'a str, ClientError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ClientError::invalid_payload(format!("\"{field}\" must not be empty")));
    }
    if text.chars().count() > max {
        return Err(ClientError::invalid_payload(format!("\"{field}\" must be at most {max} characters")));
    }
    Ok(text)
}
