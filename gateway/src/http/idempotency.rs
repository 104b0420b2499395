//! `Idempotency-Key` on every POST of the server API: a retry with the same key (same caller,
//! same route, same body) answers the first 2xx answer again, with `Idempotent-Replayed: true`,
//! and does nothing new. While the first request runs, a retry gets 409; a first request that
//! failed gives the key back, so that its retry runs for real. Keys are kept 24 hours
//! (`shared::store`).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::store::Reservation;

use super::error::ApiError;
use super::extract::{bearer, is_backend};
use crate::node::Node;

pub(crate) const HEADER: &str = "idempotency-key";
/// Longest key accepted (a UUID is 36).
const MAX_KEY: usize = 255;
/// Largest answer kept for replay; the API's answers are small objects.
const MAX_ANSWER: usize = 1024 * 1024;

/// Who is calling, for the key's scope: the backend, or the user of a valid token. `None` for
/// an unauthenticated request, which the route itself refuses.
fn caller(app: &Node, headers: &HeaderMap) -> Option<String> {
    if is_backend(app, headers) {
        return Some("backend".to_owned());
    }
    let claims = app.verifier.verify(bearer(headers)?).ok()?;
    Some(format!("user:{}", claims.user_id))
}

fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(HEADER) else { return Ok(None) };
    let bad = || ApiError::bad_field("Idempotency-Key", format!("must be 1-{MAX_KEY} visible ASCII characters"));
    let key = raw.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

pub(crate) async fn middleware(State(app): State<Node>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    // Who calls first: an unauthenticated request is the route's to refuse (401), whatever its key.
    let Some(caller) = caller(&app, request.headers()) else { return next.run(request).await };
    let key = match key_of(request.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    // The body is part of the request the key names: the same key with another body is another
    // request (run for real, not answered with the first one's answer).
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, super::extract::MAX_BODY_BYTES).await else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large")
            .into_response();
    };
    let scope = format!("{caller} {} {:016x}", parts.uri.path().trim_end_matches('/'), fnv1a(&bytes));
    let request = Request::from_parts(parts, Body::from(bytes));
    match app.store.reserve_idempotency_key(&scope, &key).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Reservation::InProgress) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", "a request with this Idempotency-Key is in progress")
                .into_response()
        }
        Ok(Reservation::Answered { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Ok(Reservation::Reserved) => {
            let response = next.run(request).await;
            if !response.status().is_success() {
                if let Err(e) = app.store.release_idempotency_key(&scope, &key).await {
                    tracing::warn!(error = %e, "idempotency key not released; it is taken over after a minute");
                }
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER).await else {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "answer too large")
                    .into_response();
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = app.store.complete_idempotency_key(&scope, &key, parts.status.as_u16(), &text).await {
                // Done, but not recorded: a retry would do it again. Say so rather than pretend.
                tracing::error!(error = %e, "idempotency answer not recorded");
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// FNV-1a, 64 bits: the same on every node and every version, which `std`'s hasher does not
/// promise. Collisions only matter within one caller's key, so no cryptographic hash is needed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
