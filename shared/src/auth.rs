//! JWT verification. The algorithm is pinned by configuration (never read from the token), so
//! `alg: none` and HS/RS confusion fail; `exp` is required and checked without leeway.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::UserId;

/// The configured verification key. `Debug` never prints key material.
#[derive(Clone)]
pub enum JwtKey {
    Hs256(String),
    Rs256(Vec<u8>),
    Es256(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtKey::Hs256(_) => "JwtKey::Hs256(..)",
            JwtKey::Rs256(_) => "JwtKey::Rs256(..)",
            JwtKey::Es256(_) => "JwtKey::Es256(..)",
        })
    }
}

impl JwtKey {
    pub fn from_public_pem(alg: &str, pem: &[u8]) -> Result<Self, String> {
        let key = match alg {
            "RS256" => JwtKey::Rs256(pem.to_vec()),
            "ES256" => JwtKey::Es256(pem.to_vec()),
            other => return Err(format!("algorithm {other} is not RS256 or ES256")),
        };
        Verifier::new(&key).map(|_| key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub user_id: UserId,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(deserialize_with = "string_or_number")]
    sub: String,
    exp: i64,
}

/// `sub` as a string; backends with integer user ids put a number there.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        S(String),
        N(i64),
    }
    Ok(match Sub::deserialize(d)? {
        Sub::S(s) => s,
        Sub::N(n) => n.to_string(),
    })
}

/// A ready-to-use verifier: the decoding key is parsed once at start.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(key: &JwtKey) -> Result<Self, String> {
        let (alg, key) = match key {
            JwtKey::Hs256(secret) => (Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes())),
            JwtKey::Rs256(pem) => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())?),
            JwtKey::Es256(pem) => (Algorithm::ES256, DecodingKey::from_ec_pem(pem).map_err(|e| e.to_string())?),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        // A token that is not valid yet (`nbf` ahead) is refused like an expired one.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let user_id = UserId::parse(&data.claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Claims { user_id, exp: data.claims.exp })
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
}

/// Signs an HS256 token for `user` valid for `ttl_secs`: the development helper behind
/// `gateway token`, and what tests use.
pub fn issue_hs256(secret: &str, user: &str, ttl_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = IssuedClaims { sub: user, exp: now + ttl_secs, iat: now };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(&JwtKey::Hs256("secret".into())).unwrap()
    }

    #[test]
    fn accepts_a_good_token() {
        let claims = verifier().verify(&issue_hs256("secret", "alice", 60)).unwrap();
        assert_eq!(claims.user_id.as_str(), "alice");
    }

    #[test]
    fn rejects_wrong_key_expired_and_garbage() {
        assert_eq!(verifier().verify(&issue_hs256("other", "alice", 60)).unwrap_err(), AuthError::Invalid);
        assert_eq!(verifier().verify(&issue_hs256("secret", "alice", -10)).unwrap_err(), AuthError::Expired);
        assert_eq!(verifier().verify("not.a.token").unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn rejects_a_token_not_valid_yet() {
        let now = chrono::Utc::now().timestamp();
        let sign = |nbf: i64| {
            let claims = serde_json::json!({"sub": "alice", "exp": now + 7200, "nbf": nbf});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret")).unwrap()
        };
        assert_eq!(verifier().verify(&sign(now + 3600)).unwrap_err(), AuthError::Invalid);
        assert!(verifier().verify(&sign(now - 10)).is_ok(), "valid since ten seconds ago");
    }

    #[test]
    fn rejects_alg_none() {
        // {"alg":"none","typ":"JWT"} . {"sub":"alice","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(verifier().verify(token).unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn rejects_a_token_without_exp() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "alice"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(verifier().verify(&token).unwrap_err(), AuthError::Invalid);
    }
}
