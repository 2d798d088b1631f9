//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! answer types, served at `/openapi.json`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{content, files, health};
use crate::views::{
    Accepted, CallbackView, DeliveryView, FileLinks, FileList, FileView, Liveness, Readiness, Status, UploadForm,
};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "api-svc",
        description = "Upload files for processing, follow their status, download results. Every /v1 route \
                       needs `Authorization: Bearer <token>`; every error is `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        files::upload,
        files::list,
        files::get,
        files::delete,
        content::content,
        content::artifact,
        health::livez,
        health::readyz,
        health::metrics
    ),
    components(schemas(
        Accepted,
        FileView,
        FileList,
        FileLinks,
        CallbackView,
        DeliveryView,
        Status,
        ErrorBody,
        ErrorDetail,
        Liveness,
        Readiness,
        UploadForm
    )),
    modifiers(&BearerAuth),
    tags((name = "files", description = "uploads and their processing"), (name = "health", description = "probes and metrics"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()));
    HttpResponse::Ok().content_type("application/json").body(body.as_str())
}
