//! How ids and instants are stored, per backend, so that one query serves both: a UUID is
//! `uuid` on PostgreSQL and hyphenated text on SQLite; an instant is `timestamptz` on PostgreSQL
//! and fixed-width RFC 3339 text (`crate::time::format`, which sorts like the instant) on SQLite.
//! Bind and read `DbUuid` / `DbTime` wherever such a column is involved.

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

/// A UUID column or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DbUuid(pub(super) Uuid);

/// An instant column or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DbTime(pub(super) DateTime<Utc>);

/// Implements `Type`, `Encode` and `Decode` for a newtype: as `$pg` on PostgreSQL, as text on
/// SQLite through `$to_text` and `$from_text`.
macro_rules! stored_as {
    ($name:ident, $pg:ty, $to_text:expr, $from_text:expr) => {
        impl Type<Postgres> for $name {
            fn type_info() -> <Postgres as Database>::TypeInfo {
                <$pg as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
                <$pg as Type<Postgres>>::compatible(ty)
            }
        }
        impl<'q> Encode<'q, Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                <$pg as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
            }
        }
        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(Self(<$pg as Decode<'r, Postgres>>::decode(value)?))
            }
        }
        impl Type<Sqlite> for $name {
            fn type_info() -> <Sqlite as Database>::TypeInfo {
                <String as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
                <String as Type<Sqlite>>::compatible(ty)
            }
        }
        impl<'q> Encode<'q, Sqlite> for $name {
            fn encode_by_ref(&self, buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
                let to_text: fn(&$pg) -> String = $to_text;
                <String as Encode<'q, Sqlite>>::encode(to_text(&self.0), buf)
            }
        }
        impl<'r> Decode<'r, Sqlite> for $name {
            fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<'r, Sqlite>>::decode(value)?;
                let from_text: fn(&str) -> Option<$pg> = $from_text;
                from_text(text).map(Self).ok_or_else(|| format!("not a stored {}: {text:?}", stringify!($name)).into())
            }
        }
    };
}

stored_as!(DbUuid, Uuid, |id| id.to_string(), |text| Uuid::parse_str(text).ok());
stored_as!(DbTime, DateTime<Utc>, crate::time::format, crate::time::parse);
