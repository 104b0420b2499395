//! The server API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! annotations and the types their bodies are made of, and served at `/api/v1/openapi.json`.
//! The sockets are not HTTP operations: PROTOCOL.md and docs/ describe them.
//! The error answers an operation can give are named once in `super::responses`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        super::console::nodes,
        super::console::tail,
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
