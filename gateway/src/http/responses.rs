//! The error answers the server API's operations can give, named once as OpenAPI response sets
//! and listed on each operation (`#[utoipa::path(responses(...))]`): the suite checks that
//! every status listed is one a request can get.

use serde::Deserialize;
use utoipa::{IntoParams, IntoResponses};

use super::error::ErrorBody;

/// `Idempotency-Key` on a POST (`crate::http::idempotency`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct IdempotencyKey {
    /// 1-255 visible ASCII characters, unique per intended request; kept 24 hours. A retry with
    /// the same key answers the first 2xx answer again (`Idempotent-Replayed: true`).
    #[serde(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

#[derive(IntoResponses)]
#[response(status = 400, description = "a path parameter, field or header is invalid, or the body is not JSON")]
#[allow(dead_code)]
pub(crate) struct BadField(ErrorBody);

#[derive(IntoResponses)]
#[response(status = 401, description = "missing or invalid bearer credentials")]
#[allow(dead_code)]
pub(crate) struct Unauthorized(ErrorBody);

#[derive(IntoResponses)]
#[response(status = 404, description = "no such thing, or not one the caller may see")]
#[allow(dead_code)]
pub(crate) struct NotFound(ErrorBody);

#[derive(IntoResponses)]
#[response(status = 409, description = "a request with this Idempotency-Key is still in progress")]
#[allow(dead_code)]
pub(crate) struct Conflict(ErrorBody);

#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BodyErrors {
    #[response(status = 413, description = "the body is larger than 1 MiB")]
    TooLarge(ErrorBody),
    #[response(status = 422, description = "the body is JSON of the wrong shape (the message names the field)")]
    WrongShape(ErrorBody),
}

#[derive(IntoResponses)]
#[response(status = 429, description = "too many wrong keys from this address; slow down")]
#[allow(dead_code)]
pub(crate) struct KeyThrottled(ErrorBody);

#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "this user posts faster than the sockets' rate; try again after `Retry-After` seconds",
    headers(("Retry-After" = u64, description = "seconds to wait"))
)]
#[allow(dead_code)]
pub(crate) struct UserThrottled(ErrorBody);

#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Redis or the database is unreachable, or the node is at capacity; nothing was done, retry"
)]
#[allow(dead_code)]
pub(crate) struct Unavailable(ErrorBody);
