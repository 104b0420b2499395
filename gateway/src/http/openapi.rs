//! The server API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! annotations and the types their bodies are made of, and served at `/api/v1/openapi.json`.
//! The sockets are not HTTP operations: PROTOCOL.md and docs/ describe them.
//!
//! The error answers an operation can give are named here once, as response sets, and listed
//! on each operation: the suite checks that every status listed is one a request can get.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gateway server API",
        description = "What a backend calls to tell the gateway who may be where, and to publish to sockets. \
            Backends authenticate with `Authorization: Bearer <GATEWAY_API_KEY>`; the history and Pythia \
            message routes also take a user's own JWT. Every error is `{\"error\": CODE, \"message\": TEXT}`. \
            A POST may carry `Idempotency-Key`: a retry with the same key answers the first answer again."
    ),
    paths(
        super::api::put_user,
        super::api::get_user,
        super::api::put_session,
        super::api::get_session,
        super::api::session_messages,
        super::api::put_chat,
        super::api::get_chat,
        super::api::chat_messages,
        super::channels::put_channel,
        super::channels::get_channel,
        super::channels::put_member,
        super::channels::delete_member,
        super::channels::channel_messages,
        super::channels::post_message,
        super::channels::post_reaction,
        super::onetask::put_workspace,
        super::onetask::put_focus_session,
        super::onetask::post_notification,
        super::onetask::post_task_event,
        super::onetask::post_publish,
        super::health::ws_status,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        crate::console::nodes,
        crate::console::tail,
        document,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The two ways to authenticate: the backend's key, and a user's own JWT (the token its sockets use).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let key = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("the gateway's GATEWAY_API_KEY"));
        components.add_security_scheme("api_key", SecurityScheme::Http(key.build()));
        let jwt = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("a user's token, as on the sockets"));
        components.add_security_scheme("user_jwt", SecurityScheme::Http(jwt.build()));
    }
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 description of this API", body = Object)))]
pub(crate) async fn document() -> impl IntoResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the description serializes"));
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

/// `Idempotency-Key` on a POST (`super::idempotency`).
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
    status = 503,
    description = "Redis or the database is unreachable, or the node is at capacity; nothing was done, retry"
)]
#[allow(dead_code)]
pub(crate) struct Unavailable(ErrorBody);
