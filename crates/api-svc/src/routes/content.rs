//! Downloads: a file's content and its artifacts, streamed from the store with `Content-Length`,
//! a strong `ETag` (`If-None-Match` → 304) and single byte ranges (`Range` → 206, or 416;
//! `If-Range` honoured). Never buffered whole. `HEAD` answers the same headers without the body.

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use object_store::path::Path as ObjectPath;
use platform::storage::Storage;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::filename;
use crate::range::{self, Requested};
use crate::routes::file_id;
use crate::state::AppState;
use crate::views::is_artifact_name;

/// What to send and how to describe it.
struct Object {
    key: ObjectPath,
    etag: Option<String>,
    content_type: String,
    disposition: Option<ContentDisposition>,
}

/// The uploaded content of a file.
#[utoipa::path(
    method(get, head),
    path = "/v1/files/{id}/content",
    tag = "files",
    params(
        ("id" = Uuid, Path, description = "the file's id"),
        ("Range" = Option<String>, Header, description = "one byte range, e.g. bytes=0-1023"),
        ("If-None-Match" = Option<String>, Header, description = "the ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "the whole content, typed as uploaded (`application/octet-stream` if untyped)", content_type = "*/*"),
        (status = 206, description = "the requested range", content_type = "*/*"),
        (status = 304, description = "not modified"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 416, description = "range_not_satisfiable", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn content(
    state: web::Data<AppState>,
    _caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let record = state.db(state.db.get_file(id)).await?.ok_or(ApiError::NotFound("file"))?;
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![DispositionParam::Filename(filename::download_name(&record.filename))],
    };
    let object = Object {
        key: Storage::original_key(id),
        // The content never changes: its sha256 is its strong validator.
        etag: Some(format!("\"{}\"", record.sha256)),
        content_type: record.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
        disposition: Some(disposition),
    };
    serve(&state, &req, object).await
}

/// An artifact processing made (e.g. `thumbnail.jpg`, `preview.mp4`, `waveform.png`).
#[utoipa::path(
    method(get, head),
    path = "/v1/files/{id}/artifacts/{name}",
    tag = "files",
    params(
        ("id" = Uuid, Path, description = "the file's id"),
        ("name" = String, Path, description = "the artifact's name, as listed in the file's links"),
        ("Range" = Option<String>, Header, description = "one byte range, e.g. bytes=0-1023"),
    ),
    responses(
        (status = 200, description = "the artifact, typed by its extension (`.jpg` is `image/jpeg`, ...)", content_type = "*/*"),
        (status = 206, description = "the requested range", content_type = "*/*"),
        (status = 304, description = "not modified"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 416, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn artifact(
    state: web::Data<AppState>,
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let id: Uuid = file_id(&id)?;
    if !is_artifact_name(&name) {
        return Err(ApiError::NotFound("artifact"));
    }
    state.db(state.db.get_file(id)).await?.ok_or(ApiError::NotFound("file"))?;
    let object = Object {
        key: Storage::artifact_key(id, &name),
        etag: None,
        content_type: media_type(&name).to_owned(),
        disposition: None,
    };
    serve(&state, &req, object).await.map_err(|e| match e {
        ApiError::NotFound(_) => ApiError::NotFound("artifact"),
        other => other,
    })
}

/// The media type of an artifact, by the extension its worker gave it.
fn media_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn serve(state: &AppState, req: &HttpRequest, object: Object) -> Result<HttpResponse, ApiError> {
    let meta = state.storage.head(&object.key).await.map_err(ApiError::from_storage)?;
    let etag = object.etag.or_else(|| meta.e_tag.as_deref().map(quote));
    let header_str = |name| req.headers().get(name).and_then(|v| v.to_str().ok());

    if let (Some(etag), Some(if_none_match)) = (&etag, header_str(header::IF_NONE_MATCH))
        && matches_any(if_none_match, etag)
    {
        return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag.clone())).finish());
    }
    let range_allowed = match header_str(header::IF_RANGE) {
        None => true,
        Some(validator) => etag.as_deref() == Some(validator.trim()),
    };
    let requested =
        if range_allowed { range::requested(header_str(header::RANGE), meta.size) } else { Requested::Full };
    let range = match requested {
        Requested::Full => None,
        Requested::Partial(range) => Some(range),
        Requested::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size: meta.size }),
    };
    let (meta, served, stream) = state.storage.get(&object.key, range.clone()).await.map_err(ApiError::from_storage)?;

    let mut response = match range {
        Some(_) => {
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", served.start, served.end - 1, meta.size),
            ));
            partial
        }
        None => HttpResponse::Ok(),
    };
    response
        .insert_header((header::CONTENT_TYPE, object.content_type))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"));
    if let Some(etag) = etag {
        response.insert_header((header::ETAG, etag));
    }
    if let Some(disposition) = object.disposition {
        response.insert_header(disposition);
    }
    Ok(response.body(SizedStream::new(served.end - served.start, stream)))
}

fn quote(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/") { tag.to_owned() } else { format!("\"{tag}\"") }
}

/// `If-None-Match`: `*`, or a list in which one tag equals `etag` (weak comparison).
fn matches_any(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if_none_match.split(',').any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_and_media_types() {
        assert!(matches_any("\"a\", \"b\"", "\"b\""));
        assert!(matches_any("W/\"b\"", "\"b\""));
        assert!(matches_any("*", "\"b\""));
        assert!(!matches_any("\"c\"", "\"b\""));
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("\"abc\""), "\"abc\"");
        assert_eq!(media_type("thumbnail.JPG"), "image/jpeg");
        assert_eq!(media_type("noext"), "application/octet-stream");
    }
}
