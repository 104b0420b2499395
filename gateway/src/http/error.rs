//! JSON errors of the HTTP API: `{"error": CODE, "message": TEXT}` with a status that fits. Every
//! error answer has this shape, the framework's own refusals included (`json_errors`).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use shared::store::StoreError;
use utoipa::ToSchema;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds to wait before trying again (`Retry-After`), for a 429 that knows.
    pub(crate) retry_after: Option<u64>,
}

/// What an error answer carries.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code to branch on: `invalid_field`, `invalid_json`, `invalid_body`,
    /// `unauthorized`, `not_found`, `conflict`, `payload_too_large`, `rate_limited`, `unavailable`...
    #[schema(example = "invalid_field")]
    error: String,
    /// For people: what was wrong, naming the field where there is one.
    #[schema(example = "id: must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 429 with `Retry-After`: the caller is over its rate and may try again after `wait`.
    pub(crate) fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self { retry_after: Some(seconds.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message) }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid bearer credentials")
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub(crate) fn bad_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", format!("{field}: {problem}"))
    }

    pub(crate) fn bad_body(problem: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", problem.to_string())
    }
}

impl ApiError {
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database error");
        Self::unavailable("database unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { error: self.code.to_owned(), message: self.message })).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// The router's own refusals (no such route, wrong method, a path that is not UTF-8, a socket
/// route called without an upgrade) come as plain text from axum; they leave here as the same
/// JSON as every other error, with their status and headers (such as `Allow`) kept.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let message = match text {
        Ok(text) if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "unavailable",
        _ => "invalid_request",
    };
    let json = ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, json.into_body())
}
