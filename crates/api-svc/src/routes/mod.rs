//! The HTTP routes, one file per resource, and the table that mounts them.

pub(crate) mod content;
pub(crate) mod files;
pub(crate) mod health;

use actix_web::web;

use crate::error::ApiError;
use crate::openapi;

/// Mounts every route. A known path with another method answers 405 with `Allow`, an unknown
/// path 404, both as JSON.
pub(crate) fn mount(config: &mut web::ServiceConfig) {
    config
        .service(
            resource("/v1/files", "GET, POST").route(web::post().to(files::upload)).route(web::get().to(files::list)),
        )
        .service(
            resource("/v1/files/{id}", "GET, DELETE")
                .route(web::get().to(files::get))
                .route(web::delete().to(files::delete)),
        )
        .service(
            resource("/v1/files/{id}/content", "GET, HEAD")
                .route(web::get().to(content::content))
                .route(web::head().to(content::content)),
        )
        .service(
            resource("/v1/files/{id}/artifacts/{name}", "GET, HEAD")
                .route(web::get().to(content::artifact))
                .route(web::head().to(content::artifact)),
        )
        .service(resource("/livez", "GET").route(web::get().to(health::livez)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::serve)));
}

/// The resource at `path`, whose other methods answer 405 naming `allow`, the methods it has.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// A file id from the path; anything that is not a UUID names no file.
pub(crate) fn file_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("file"))
}
