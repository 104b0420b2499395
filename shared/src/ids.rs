//! Id newtypes, parsed once at the edge (path, token, API body) so that everything past the edge
//! holds a value that is known to be well formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an id was refused; the message names the rule so that a 400 can say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    Opaque,
    #[error("must be a UUID")]
    Uuid,
}

/// Checks the opaque-id rule of PROTOCOL.md: 1–64 characters of `A-Za-z0-9_-`.
fn check_opaque(raw: &str) -> Result<(), IdError> {
    let ok =
        !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::Opaque)
    }
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check_opaque(raw)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                check_opaque(&raw)?;
                Ok(Self(raw))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A user, as named by the backend and by a token's `sub`.
    UserId
);

opaque_id!(
    /// A chat (chat.txt).
    ChatId
);

opaque_id!(
    /// A Pythia channel (pythia.md).
    ChannelId
);

opaque_id!(
    /// A OneTask workspace.
    WorkspaceId
);

opaque_id!(
    /// A OneTask focus session (a shared timer).
    FocusSessionId
);

/// A Send Buddy climbing session: a UUID (sendbuddy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Uuid::parse_str(raw).map(Self).map_err(|_| IdError::Uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for SessionId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A chat message, assigned by the gateway: UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Uuid::parse_str(raw).map(Self).map_err(|_| IdError::Uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ids_follow_the_protocol_rule() {
        assert!(UserId::parse("alice_01-x").is_ok());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(UserId::parse(""), Err(IdError::Opaque));
        assert_eq!(UserId::parse(&"a".repeat(65)), Err(IdError::Opaque));
        assert_eq!(UserId::parse("a b"), Err(IdError::Opaque));
        assert_eq!(UserId::parse("é"), Err(IdError::Opaque));
        assert!(serde_json::from_str::<UserId>("\"../x\"").is_err());
    }

    #[test]
    fn session_ids_are_uuids() {
        assert!(SessionId::parse("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert_eq!(SessionId::parse("not-a-uuid"), Err(IdError::Uuid));
    }
}
