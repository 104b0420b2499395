//! What the server API's handlers take from a request: the backend's key (`Backend`), a JSON
//! body decoded in one place (`JsonBody`, `decode_body`), a history page's query, and who calls
//! a history route. A bad one answers with JSON that names the field (`super::error::ApiError`).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use shared::ids::{MessageId, UserId};
use shared::store::Page;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::node::Node;
use crate::protocols::frame::{has_nul, NUL_REFUSED};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without an early exit, so that response time does not reveal the key's prefix.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn is_backend(app: &Node, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|key| same_secret(key, &app.config.api_key))
}

/// Proof that the caller is the backend (`Authorization: Bearer <GATEWAY_API_KEY>`); 401 otherwise.
pub(crate) struct Backend;

impl FromRequestParts<Node> for Backend {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Node) -> Result<Self, ApiError> {
        if is_backend(app, &parts.headers) {
            return Ok(Backend);
        }
        // Guessing keys from one address is throttled: past a burst of failures, 429.
        let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if ip.is_some_and(|ip| !app.ip_guards.bad_key(ip)) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed keys; slow down",
            ));
        }
        Err(ApiError::unauthorized())
    }
}

/// Largest server-API body; the API's bodies are small objects.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, decoded by `decode_body`; larger than `MAX_BODY_BYTES` answers 413.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are at most {MAX_BODY_BYTES} bytes"),
            )
        };
        // Refused before a byte of it is read: a client announcing 10 MB is answered at once.
        let announced = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if announced.and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await.map_err(|e| {
            // The limit's error is the cause of axum's.
            match std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                true => too_large(),
                false => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body could not be read: {e}"))
                }
            }
        })?;
        decode_body(&bytes).map(JsonBody)
    }
}

/// The one place a server-API body is decoded: bytes that are not JSON answer 400
/// `invalid_json`; text with a NUL character (which the database cannot store) 400
/// `invalid_field`; JSON of the wrong shape 422 `invalid_body`, naming the field.
pub(crate) fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_body(e),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")),
    })?;
    if has_nul(&value) {
        return Err(ApiError::bad_field("body", NUL_REFUSED));
    }
    serde_json::from_value(value).map_err(ApiError::bad_body)
}

/// A page of history: newest first.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// How many messages, 1-200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only messages older than this message id (the last of the previous page).
    #[param(value_type = Option<String>, format = Uuid)]
    before: Option<String>,
}

/// The query of a history route, read by hand: a query axum could not read (a repeated
/// parameter, bytes that are not UTF-8) answers 400 `invalid_field` like any other bad value.
pub(crate) struct HistoryParams(pub(crate) HistoryQuery);

impl<S: Send + Sync> FromRequestParts<S> for HistoryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(query) = axum::extract::Query::<HistoryQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_field("query", e.body_text()))?;
        Ok(Self(query))
    }
}

impl HistoryQuery {
    pub(crate) fn page(&self) -> Result<Page, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_PAGE,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(ApiError::bad_field("limit", format!("must be an integer from 1 to {MAX_PAGE}"))),
            },
        };
        let before = match &self.before {
            None => None,
            Some(raw) => Some(MessageId::parse(raw).map_err(|e| ApiError::bad_field("before", e))?),
        };
        Ok(Page { limit, before })
    }
}

/// Who calls a history route: `None` for the backend's key, else the user of a valid token
/// (of an active user).
pub(crate) async fn history_caller(app: &Node, headers: &HeaderMap) -> Result<Option<UserId>, ApiError> {
    if is_backend(app, headers) {
        return Ok(None);
    }
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let user_id = app.verifier.verify(token).map_err(|_| ApiError::unauthorized())?.user_id;
    // As on the socket: a token of an unknown or deactivated user opens nothing.
    match app.store.user(&user_id).await? {
        Some(user) if user.is_active => Ok(Some(user_id)),
        _ => Err(ApiError::unauthorized()),
    }
}
