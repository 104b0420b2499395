//! The one place that maps what went wrong to what a client sees: a close code (the socket ends)
//! or an error frame (the socket stays usable). PROTOCOL.md "Rules for every socket".

use axum::extract::ws::{CloseFrame, Utf8Bytes};
use serde::Serialize;
use shared::event::Group;

/// Why the gateway closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// 4001: no token in `?token=`.
    NoToken,
    /// 4002: the token's user is unknown or inactive.
    UserNotFound,
    /// 4003: the token is invalid, or expired (also while connected, at its expiry).
    InvalidToken,
    /// 4004: not a participant/member of what was asked for (or it does not exist).
    NotMember,
    /// 1003: a binary frame.
    BinaryFrame,
    /// 1009: a frame over the size limit.
    FrameTooBig,
    /// 1008: sustained rate-limit abuse, or too many sockets for this user.
    PolicyViolation,
    /// 1013: the outbox filled up (slow reader).
    SlowConsumer,
    /// 1012: the node is draining; reconnect elsewhere.
    Restarting,
    /// 1001: the peer stayed silent past the idle timeout.
    Idle,
    /// 1011: the gateway could not serve the request (database unreachable at connect).
    Internal,
    /// 1002: the peer broke RFC 6455 (an unmasked or reserved frame, a continuation with no
    /// start, a malformed close frame).
    ProtocolError,
    /// 1007: a text frame (or close reason) that is not UTF-8.
    InvalidData,
}

impl CloseReason {
    const ALL: [CloseReason; 13] = [
        CloseReason::NoToken,
        CloseReason::UserNotFound,
        CloseReason::InvalidToken,
        CloseReason::NotMember,
        CloseReason::BinaryFrame,
        CloseReason::FrameTooBig,
        CloseReason::PolicyViolation,
        CloseReason::SlowConsumer,
        CloseReason::Restarting,
        CloseReason::Idle,
        CloseReason::Internal,
        CloseReason::ProtocolError,
        CloseReason::InvalidData,
    ];

    pub(crate) fn code(self) -> u16 {
        match self {
            CloseReason::NoToken => 4001,
            CloseReason::UserNotFound => 4002,
            CloseReason::InvalidToken => 4003,
            CloseReason::NotMember => 4004,
            CloseReason::BinaryFrame => 1003,
            CloseReason::FrameTooBig => 1009,
            CloseReason::PolicyViolation => 1008,
            CloseReason::SlowConsumer => 1013,
            CloseReason::Restarting => 1012,
            CloseReason::Idle => 1001,
            CloseReason::Internal => 1011,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidData => 1007,
        }
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            CloseReason::NoToken => "No token provided",
            CloseReason::UserNotFound => "User not found",
            CloseReason::InvalidToken => "Invalid or expired token",
            CloseReason::NotMember => "Not a participant",
            CloseReason::BinaryFrame => "Binary frames are not supported",
            CloseReason::FrameTooBig => "Frame too large",
            CloseReason::PolicyViolation => "Policy violation",
            CloseReason::SlowConsumer => "Client too slow",
            CloseReason::Restarting => "Server restarting",
            CloseReason::Idle => "Idle timeout",
            CloseReason::Internal => "Internal error",
            CloseReason::ProtocolError => "Protocol error",
            CloseReason::InvalidData => "Invalid UTF-8",
        }
    }

    /// For `SocketLink::kick_code`, which stores `code()`.
    pub(crate) fn from_code(code: u16) -> Self {
        Self::ALL.into_iter().find(|r| r.code() == code).unwrap_or(CloseReason::Internal)
    }

    pub(crate) fn frame(self) -> CloseFrame {
        CloseFrame { code: self.code(), reason: Utf8Bytes::from_static(self.text()) }
    }

    /// The close frame of a client that should come back: its reason names when
    /// (`retry_after_ms=N`) and, on a single-group socket, from where (`since=SEQ`, for `?since=`),
    /// e.g. `Server restarting; retry_after_ms=830; since=1204` (well under the 123 bytes a close
    /// reason may have).
    pub(crate) fn frame_with_hint(self, retry_after: std::time::Duration, since: Option<u64>) -> CloseFrame {
        let mut reason = format!("{}; retry_after_ms={}", self.text(), retry_after.as_millis());
        if let Some(seq) = since {
            reason.push_str(&format!("; since={seq}"));
        }
        CloseFrame { code: self.code(), reason: Utf8Bytes::from(reason) }
    }
}

/// The `error_code` values of the error frame (pythia.md's table, extended by PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    InvalidJson,
    UnknownMessageType,
    InvalidPayload,
    RateLimited,
    Unavailable,
    AccessDenied,
    /// In pythia.md's table, and so in the wire contract; the gateway answers every server-side
    /// failure it meets with `unavailable` (which a client may retry), so it sends none today.
    #[allow(dead_code)]
    InternalError,
    MissingChannelId,
    JoinChannelError,
    LeaveChannelError,
    TypingIndicatorError,
    GetOnlineUsersError,
}

/// A problem with one client frame: answered with an error frame, the socket stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// More about the problem (pythia.md's error frame has it).
    pub(crate) details: Option<String>,
    /// The sender's own publication (its group and seq) that went out but that no replica took
    /// in time (`GATEWAY_REDIS_REPLICA_ACKS`): its echo is withheld from the sending socket, which
    /// hears `unavailable` instead (`ws::seams`).
    pub(crate) withdrawn_echo: Option<(Group, u64)>,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error_code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

impl ClientError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: None, withdrawn_echo: None }
    }

    pub(crate) fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub(crate) fn invalid_json() -> Self {
        Self::new(ErrorCode::InvalidJson, "Message is not valid JSON")
    }

    pub(crate) fn unknown_type(kind: Option<&str>) -> Self {
        match kind {
            Some(kind) => Self::new(ErrorCode::UnknownMessageType, format!("Unknown message type: {kind}")),
            None => Self::new(ErrorCode::UnknownMessageType, "Message has no \"type\""),
        }
    }

    pub(crate) fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidPayload, message)
    }

    pub(crate) fn rate_limited() -> Self {
        Self::new(ErrorCode::RateLimited, "Too many messages; slow down")
    }

    pub(crate) fn unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, "Message not sent: the service is temporarily unavailable; retry")
    }

    /// `unavailable` for a publication that went out unreplicated: its echo is withheld.
    pub(crate) fn withdrawing(mut self, group: &Group, seq: u64) -> Self {
        self.withdrawn_echo = Some((group.clone(), seq));
        self
    }

    /// `{"type":"error","error_code":…,"message":…}`
    pub(crate) fn frame(&self) -> Utf8Bytes {
        let frame = ErrorFrame {
            kind: "error",
            error_code: self.code,
            message: &self.message,
            details: self.details.as_deref(),
        };
        Utf8Bytes::from(serde_json::to_string(&frame).expect("error frames always serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_round_trip_through_their_codes() {
        for reason in CloseReason::ALL {
            assert_eq!(CloseReason::from_code(reason.code()), reason);
        }
    }

    #[test]
    fn error_frames_have_the_protocol_shape() {
        let frame = ClientError::invalid_json().frame();
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error_code"], "invalid_json");
        assert!(v["message"].is_string());
    }
}
