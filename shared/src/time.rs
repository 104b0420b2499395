//! The one wire format for instants: RFC 3339, UTC, `Z`, exactly six fractional digits
//! (`2026-01-13T18:30:00.123456Z`). Fixed width, so the text sorts like the instant.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// Now, truncated to microseconds so that what clients see equals what the database stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn format(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

/// Serde adapter: `#[serde(with = "shared::time::rfc3339")]`.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = <&str>::deserialize(d)?;
        super::parse(raw).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }
}

/// Serde adapter for `Option<DateTime<Utc>>`: `#[serde(default, with = "shared::time::rfc3339_opt")]`.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&super::format(at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(raw) => {
                super::parse(&raw).map(Some).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_micros_and_z() {
        let t = super::parse("2026-01-13T18:30:00.123456Z").unwrap();
        assert_eq!(super::format(&t), "2026-01-13T18:30:00.123456Z");
        let t = super::parse("2026-01-13T18:30:00Z").unwrap();
        assert_eq!(super::format(&t), "2026-01-13T18:30:00.000000Z");
    }
}
