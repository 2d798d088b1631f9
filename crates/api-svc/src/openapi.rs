//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! answer types, served at `/openapi.json`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
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
    modifiers(&BearerAuth, &EmptyQueryValues),
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

/// Every query parameter may be sent empty, which means not given (`?status=&cursor=` lists
/// the first page of every status): `allowEmptyValue`, which utoipa does not model, so it goes
/// in through the parameter's map of extra fields.
struct EmptyQueryValues;

impl Modify for EmptyQueryValues {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.head];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let RefOr::T(parameter) = parameter
                        && parameter.parameter_in == ParameterIn::Query
                    {
                        parameter.extensions.get_or_insert_default().insert("allowEmptyValue".to_owned(), true.into());
                    }
                }
            }
        }
    }
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()));
    HttpResponse::Ok().content_type("application/json").body(body.as_str())
}
