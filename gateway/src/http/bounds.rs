//! What the server API accepts of the text it stores and the events it publishes, in one place:
//! each stored text field's length limit (the OpenAPI description gives each as `maxLength`; a
//! longer value is answered 422 naming the field), the user ids a route already takes, and the
//! top-level names of an event the gateway writes itself.

use serde_json::Value;

use super::error::ApiError;

/// A user's `username` (characters).
pub(crate) const USERNAME: usize = 150;
/// A user's `email`: the longest address SMTP carries (RFC 5321).
pub(crate) const EMAIL: usize = 254;
/// A user's `display_name`.
pub(crate) const DISPLAY_NAME: usize = 150;
/// A channel's `name`.
pub(crate) const CHANNEL_NAME: usize = 200;
/// A channel message's `content`, once trimmed.
pub(crate) const MESSAGE_CONTENT: usize = 4000;
/// A reaction's `emoji`, once trimmed.
pub(crate) const EMOJI: usize = 32;
/// A notification's `title`.
pub(crate) const NOTIFICATION_TITLE: usize = 200;
/// A notification's `content`.
pub(crate) const NOTIFICATION_CONTENT: usize = 4000;
/// A notification's `notification_type` and `related_entity_type`.
pub(crate) const NOTIFICATION_KIND: usize = 64;

/// `value` is at most `max` characters, or 422 naming `field`.
pub(crate) fn text_within(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_body(format!("{field}: at most {max} characters")));
    }
    Ok(())
}

/// User ids that name a route of their own where a user id would go (`/api/v1/ws/status` is
/// the sockets' count, not `status`'s personal socket): such a user could never connect.
const RESERVED_USER_IDS: [&str; 1] = ["status"];

/// Refuses (400) a user id another route already takes.
pub(crate) fn user_id_free(id: &str) -> Result<(), ApiError> {
    if RESERVED_USER_IDS.contains(&id) {
        return Err(ApiError::bad_field(
            "id",
            format!("`{id}` is reserved (GET /api/v1/ws/{id} is another route); choose another id"),
        ));
    }
    Ok(())
}

/// Top-level names the gateway writes into every numbered frame: `seq`, and `resume` on a socket
/// that asked for resume tokens. An event with its own would put the key twice in one frame,
/// and `JSON.parse` keeps the last.
const RESERVED_EVENT_FIELDS: [&str; 2] = ["seq", "resume"];

/// Refuses (400, naming the field) an event object that carries a reserved top-level name.
pub(crate) fn event_fields_free(event: &Value) -> Result<(), ApiError> {
    match RESERVED_EVENT_FIELDS.iter().find(|name| event.get(**name).is_some()) {
        Some(name) => Err(ApiError::bad_field(
            &format!("event.{name}"),
            format!("`{name}` is reserved: the gateway numbers every frame with its own (see the reconnect guide); rename the field"),
        )),
        None => Ok(()),
    }
}
