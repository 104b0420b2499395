//! The Diary personal socket (`/api/v1/ws/{user_id}`, diary.md; also chat.txt §1.2).
//!
//! `ping` → `pong`; `motivation_requested` → `motivation_generated`; any other valid JSON →
//! `echo` of the frame's exact text. Replies go to this socket only. An authenticated socket is
//! in `user:{id}` and receives that user's direct messages; a tokenless one (when allowed) joins
//! nothing and so never receives anyone's private data.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use shared::event::Event;

use super::frame::Parsed;
use crate::errors::ClientError;
use crate::node::Node;

pub(crate) const MAX_CHALLENGE_CHARS: usize = 500;
pub(crate) const DEFAULT_STRESS: u8 = 5;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Ping,
    Motivation { challenge: String, stress_level: u8 },
    Echo,
}

/// The frames the Diary socket understands (diary.md); any other valid JSON is echoed.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    Ping {},
    MotivationRequested {
        current_challenge: Option<String>,
        #[serde(default, deserialize_with = "stress_level")]
        stress_level: Option<i64>,
    },
}

const STRESS_RULE: &str = "\"stress_level\" must be an integer from 1 to 10";

fn stress_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    super::frame::optional_integer(d, STRESS_RULE)
}

/// Decodes a frame. Unlike the other sockets, a missing or unknown `type` is echoed.
pub(crate) fn decode(text: &str) -> Result<Action, ClientError> {
    let frame = match super::frame::parse(text)? {
        Parsed::Frame(frame) => frame,
        Parsed::Unknown(_) => return Ok(Action::Echo),
    };
    match frame {
        Frame::Ping {} => Ok(Action::Ping),
        Frame::MotivationRequested { current_challenge, stress_level } => {
            let challenge = current_challenge.unwrap_or_default();
            if challenge.chars().count() > MAX_CHALLENGE_CHARS {
                return Err(ClientError::invalid_payload(format!(
                    "\"current_challenge\" must be at most {MAX_CHALLENGE_CHARS} characters"
                )));
            }
            let stress_level = match stress_level {
                None => DEFAULT_STRESS,
                Some(n @ 1..=10) => n as u8,
                Some(_) => return Err(ClientError::invalid_payload(STRESS_RULE)),
            };
            Ok(Action::Motivation { challenge, stress_level })
        }
    }
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    message: &'static str,
}

#[derive(Serialize)]
struct Motivation<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    motivation_text: String,
    current_challenge: &'a str,
    stress_level: u8,
}

#[derive(Serialize)]
struct Echo<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    message: String,
}

/// Events delivered to the personal socket: direct messages (chat.txt §2.2 b).
pub(crate) fn render(event: &Event) -> Option<String> {
    match event {
        Event::DirectMessage(m) => super::chat::direct_message_frame(m),
        _ => None,
    }
}

/// One personal socket. `user_id` is the path's id (the token's `sub` when there is a token).
pub(crate) struct PersonalSocket {
    pub(crate) user_id: String,
}

impl PersonalSocket {
    pub(crate) fn on_text(&self, app: &Node, text: &str) -> Result<Utf8Bytes, ClientError> {
        let user_id = self.user_id.as_str();
        let json = match decode(text)? {
            Action::Ping => serde_json::to_string(&Pong { kind: "pong", user_id, message: "Pong!" }),
            Action::Motivation { challenge, stress_level } => serde_json::to_string(&Motivation {
                kind: "motivation_generated",
                user_id,
                motivation_text: app.motivation.motivate(&challenge, stress_level),
                current_challenge: &challenge,
                stress_level,
            }),
            Action::Echo => {
                serde_json::to_string(&Echo { kind: "echo", user_id, message: format!("Received: {text}") })
            }
        };
        Ok(Utf8Bytes::from(json.expect("replies serialize")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;

    #[test]
    fn decodes_the_guide_frames() {
        assert_eq!(decode(r#"{"type": "ping"}"#).unwrap(), Action::Ping);
        assert_eq!(
            decode(r#"{"type": "motivation_requested", "current_challenge": "Testing", "stress_level": 7}"#).unwrap(),
            Action::Motivation { challenge: "Testing".into(), stress_level: 7 }
        );
        assert_eq!(
            decode(r#"{"type": "motivation_requested"}"#).unwrap(),
            Action::Motivation { challenge: String::new(), stress_level: 5 }
        );
        assert_eq!(decode(r#"{"type": "custom_message", "data": "x"}"#).unwrap(), Action::Echo);
        assert_eq!(decode(r#"{"no": "type"}"#).unwrap(), Action::Echo);
        assert_eq!(decode("42").unwrap(), Action::Echo);
    }

    #[test]
    fn refuses_out_of_range_values_without_clamping() {
        for bad in [
            r#"{"type": "motivation_requested", "stress_level": 0}"#,
            r#"{"type": "motivation_requested", "stress_level": 11}"#,
            r#"{"type": "motivation_requested", "stress_level": 7.5}"#,
            r#"{"type": "motivation_requested", "stress_level": "7"}"#,
            r#"{"type": "motivation_requested", "current_challenge": 5}"#,
        ] {
            assert_eq!(decode(bad).unwrap_err().code, ErrorCode::InvalidPayload, "{bad}");
        }
        let long = format!(r#"{{"type": "motivation_requested", "current_challenge": "{}"}}"#, "x".repeat(501));
        assert_eq!(decode(&long).unwrap_err().code, ErrorCode::InvalidPayload);
        assert_eq!(decode("{oops").unwrap_err().code, ErrorCode::InvalidJson);
    }
}
