//! A client frame's first steps, shared by every protocol: JSON parsed once, then decoded into
//! the protocol's typed frame (a `#[serde(tag = "type")]` enum), with one way of answering what
//! is wrong: invalid JSON (`invalid_json`), NUL characters and missing or mistyped fields
//! (`invalid_payload`, naming the field), no `type` or one the protocol does not have
//! (`unknown_message_type`). Also the field rules several protocols share (message text, a
//! client's own message id).

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use crate::errors::ClientError;

/// A frame decoded as a protocol's typed frame `T`, or one of a type `T` does not have.
pub(crate) enum Parsed<T> {
    Frame(T),
    /// No string `type` (`None`), or a type that is not one of `T`'s.
    Unknown(Option<String>),
}

/// Decodes `text` into `T`; a frame of another type is `unknown_message_type`.
pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ClientError> {
    match parse(text)? {
        Parsed::Frame(frame) => Ok(frame),
        Parsed::Unknown(kind) => Err(ClientError::unknown_type(kind.as_deref())),
    }
}

/// Decodes `text` into `T`, telling a frame of another type apart (the Diary echoes those).
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, ClientError> {
    let value = parse_json(text)?;
    let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(Parsed::Unknown(None));
    };
    // From a borrowed value, so that an error can be traced back to the field that caused it.
    match T::deserialize(&value) {
        Ok(frame) => Ok(Parsed::Frame(frame)),
        // The typed frames' fields hold no enums: an unknown variant is the frame's `type`.
        Err(e) if e.to_string().starts_with("unknown variant") => Ok(Parsed::Unknown(Some(kind))),
        Err(e) => Err(field_error(&kind, &value, &e)),
    }
}

/// `invalid_payload` naming the field and what it must be, in the words every protocol uses:
/// `"content" is required`, `"is_typing" must be a boolean`. A field's own rule
/// (`deserialize_with`) words its message as `"field" must be …` itself.
fn field_error(kind: &str, frame: &Value, e: &serde_json::Error) -> ClientError {
    let inner = e.to_string();
    if let Some(field) = inner.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
        return ClientError::invalid_payload(format!("\"{field}\" is required"));
    }
    if inner.starts_with('"') {
        return ClientError::invalid_payload(inner);
    }
    // serde says what it found and what it expected, but not where (a tagged enum's variant is
    // decoded from a buffer that has lost the path): the field is the one holding what it found.
    if let Some((found, expected)) =
        inner.strip_prefix("invalid type: ").and_then(|rest| rest.split_once(", expected "))
    {
        let expected = if expected.starts_with("struct ") || expected == "a map" { "an object" } else { expected };
        if let Some(field) = field_holding(frame, found) {
            return ClientError::invalid_payload(format!("\"{field}\" must be {expected}"));
        }
    }
    ClientError::invalid_payload(format!("invalid {kind} frame: {}", inner.replace('`', "")))
}

/// The first field (depth first, a few levels down) whose value serde describes as `found`
/// (`integer `42``, `null`, `string "x"`, `map`).
fn field_holding(value: &Value, found: &str) -> Option<String> {
    let Value::Object(fields) = value else { return None };
    for (name, field) in fields {
        if name != "type" && described(field) == found {
            return Some(name.clone());
        }
    }
    fields.values().find_map(|field| field_holding(field, found))
}

/// A JSON value as serde's `invalid type` error describes it.
fn described(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// The `type` of a frame on a socket that takes none (after the JSON checks every frame gets).
pub(crate) fn kind_of(text: &str) -> Result<Option<String>, ClientError> {
    Ok(parse_json(text)?.get("type").and_then(Value::as_str).map(str::to_owned))
}

/// For a field's `#[serde(default, deserialize_with)]`: an optional integer whose every wrong
/// form (a string, a fraction, one out of `i64`) is refused with the field's own `rule`, worded
/// `"field" must be …` (which `field_error` passes through as it is).
pub(crate) fn optional_integer<'de, D: Deserializer<'de>>(d: D, rule: &'static str) -> Result<Option<i64>, D::Error> {
    Option::<i64>::deserialize(d).map_err(|_| D::Error::custom(rule))
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

/// A client's own id for a message it sends (`client_message_id`, optional): 1-64 characters of
/// `A-Za-z0-9_-` (a UUID fits). A resend under the same id is not published again
/// (`publish_send`).
pub(crate) fn client_id(id: Option<&str>) -> Result<Option<String>, ClientError> {
    let Some(id) = id else { return Ok(None) };
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::errors::ErrorCode;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Frame {
        Say { data: Said },
        Ping {},
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Said {
        content: String,
    }

    fn refused(text: &str) -> (ErrorCode, String) {
        let e = decode::<Frame>(text).unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn typed_frames_decode_and_say_what_is_wrong() {
        assert_eq!(decode::<Frame>(r#"{"type":"ping","extra":1}"#).unwrap(), Frame::Ping {});
        let said = decode::<Frame>(r#"{"type":"say","data":{"content":"hi"}}"#).unwrap();
        assert_eq!(said, Frame::Say { data: Said { content: "hi".into() } });
        assert_eq!(refused("{"), (ErrorCode::InvalidJson, ClientError::invalid_json().message));
        assert_eq!(refused(r#"{"type":"shout"}"#).0, ErrorCode::UnknownMessageType);
        assert_eq!(refused(r#"{"no":"type"}"#).0, ErrorCode::UnknownMessageType);
        assert_eq!(refused("[1]").0, ErrorCode::UnknownMessageType);
        assert_eq!(refused(r#"{"type":"say"}"#), (ErrorCode::InvalidPayload, "\"data\" is required".into()));
        assert_eq!(
            refused(r#"{"type":"say","data":{}}"#),
            (ErrorCode::InvalidPayload, "\"content\" is required".into())
        );
        let refusal = refused(r#"{"type":"say","data":{"content":5}}"#);
        assert_eq!(refusal, (ErrorCode::InvalidPayload, "\"content\" must be a string".into()));
        let refusal = refused(r#"{"type":"say","data":{"content":null}}"#);
        assert_eq!(refusal, (ErrorCode::InvalidPayload, "\"content\" must be a string".into()));
        let refusal = refused(r#"{"type":"say","data":"hi"}"#);
        assert_eq!(refusal, (ErrorCode::InvalidPayload, "\"data\" must be an object".into()));
        let refusal = refused(r#"{"type":"say","data":7}"#);
        assert_eq!(refusal, (ErrorCode::InvalidPayload, "\"data\" must be an object".into()));
        assert_eq!(refused("{\"type\":\"say\",\"data\":{\"content\":\"a\\u0000\"}}").0, ErrorCode::InvalidPayload);
    }

    #[test]
    fn a_frame_of_another_type_is_told_apart() {
        assert!(matches!(parse::<Frame>(r#"{"type":"shout"}"#), Ok(Parsed::Unknown(Some(kind))) if kind == "shout"));
        assert!(matches!(parse::<Frame>("42"), Ok(Parsed::Unknown(None))));
    }
}
