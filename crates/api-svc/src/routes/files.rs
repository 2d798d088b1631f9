//! `/v1/files`: upload, status, list, delete.
//!
//! An upload is acknowledged (202) only once its content is whole in the store and its row is
//! committed in Postgres: the row is the acknowledgement. The job is enqueued after that, with
//! the file id as its Bull job id; if Redis cannot take it within the command timeout the
//! answer is still 202 and worker-svc's reconciler enqueues every `queued` row whose job is
//! missing. Postgres unreachable is a 503 with nothing kept.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use platform::jobs::FileJob;
use platform::records::{FileRecord, FileStatus, NewFile};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Caller;
use crate::cursor;
use crate::error::{ApiError, ErrorBody, database_timeout};
use crate::idempotency;
use crate::metrics::UploadOutcome;
use crate::routes::file_id;
use crate::state::AppState;
use crate::upload::{self, Received};
use crate::views::{Accepted, FileList, FileView, Status, UploadForm};

/// Default page size of the list.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// Largest page size of the list.
pub(crate) const MAX_LIMIT: usize = 200;
/// The header that marks a replayed answer (Stripe's name).
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Upload parameters in the query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// Where to POST the result, for a raw body (a multipart body may send a field instead).
    /// https, or http to a host in `CALLBACK_ALLOWED_HOSTS`.
    pub callback_url: Option<String>,
}

/// Uploads a file, streamed: `multipart/form-data` with a part `file` (and optionally a field
/// `callback_url`, best sent before `file`), or a raw body with its `Content-Type` and the
/// filename in `X-Filename`.
#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "files",
    params(
        UploadQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer for the same request within 24 h; another request under the same key is 409"),
        ("X-Filename" = Option<String>, Header, description = "the filename of a raw upload (metadata only)"),
    ),
    request_body(
        description = "multipart/form-data with a binary part `file` and an optional text field `callback_url`, or the raw content",
        content((UploadForm = "multipart/form-data"), ("application/octet-stream")),
    ),
    responses(
        (status = 202, description = "stored and recorded; processing follows", body = Accepted),
        (status = 400, description = "bad input (empty_body, invalid_multipart, missing_file, missing_filename, callbacks_disabled, callback_refused, ...)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "idempotency_key_reused", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 503, description = "Postgres or storage unavailable; nothing was kept", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<UploadQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let recorded = receive_and_record(&state, &caller, &req, query.into_inner(), payload).await;
    let (outcome, bytes) = match &recorded {
        Ok(Recorded::New(row)) => (UploadOutcome::Accepted, row.size as u64),
        Ok(Recorded::Replay(_)) => (UploadOutcome::Replayed, 0),
        Err(e) if e.status_code() == StatusCode::PAYLOAD_TOO_LARGE => (UploadOutcome::TooLarge, 0),
        Err(e) if e.status_code().is_server_error() => (UploadOutcome::Failed, 0),
        Err(_) => (UploadOutcome::Rejected, 0),
    };
    state.metrics.upload(outcome, bytes);
    match recorded? {
        Recorded::New(row) => {
            enqueue(&state, row.id).await;
            tracing::info!(file_id = %row.id, size = row.size, "upload accepted");
            Ok(accepted(&row, false))
        }
        Recorded::Replay(first) => {
            tracing::info!(file_id = %first.id, "idempotent replay");
            Ok(accepted(&first, true))
        }
    }
}

/// Receives the body into the store under a new id and records it.
async fn receive_and_record(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    query: UploadQuery,
    payload: web::Payload,
) -> Result<Recorded, ApiError> {
    let key = idempotency::key(req.headers())?;
    let id = Uuid::new_v4();
    let received = upload::receive(state, req.headers(), query.callback_url, payload, id).await?;
    record(state, caller, key, id, &received).await
}

enum Recorded {
    New(FileRecord),
    Replay(FileRecord),
}

/// Commits the row of `received`, or finds the first upload under the same idempotency key (then
/// the content just received is deleted: the first upload's is the one). Whatever fails leaves
/// no content behind, unless the row may have been written (an insert that timed out or lost its
/// connection mid-way, and Postgres cannot be asked): then the content is kept, so that a
/// committed row never points at nothing.
async fn record(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    id: Uuid,
    received: &Received,
) -> Result<Recorded, ApiError> {
    let token_id = caller.token_id.as_str();
    let request_hash = key.as_ref().map(|_| idempotency::request_hash(received));
    if let Some(key) = &key {
        let earlier = async {
            state.db(state.db.expire_idempotency_key(token_id, key, idempotency::WINDOW)).await?;
            state.db(state.db.find_idempotent(token_id, key, idempotency::WINDOW)).await
        };
        match earlier.await {
            Ok(None) => {}
            Ok(Some(first)) => {
                upload::discard(&state.storage, id).await;
                return replay(first, request_hash.as_deref());
            }
            Err(e) => {
                upload::discard(&state.storage, id).await;
                return Err(e);
            }
        }
    }
    // A round trip first, so that Postgres being unreachable is known for certain (nothing was
    // written) rather than met half-way through the insert (where the outcome is unknown).
    if let Err(e) = state.db(state.db.ping()).await {
        upload::discard(&state.storage, id).await;
        return Err(e);
    }
    let new = NewFile {
        id,
        filename: received.filename.clone(),
        content_type: received.content_type.clone(),
        size: received.stored.size as i64,
        sha256: received.stored.sha256.clone(),
        callback_url: received.callback_url.clone(),
        token_id: token_id.to_owned(),
        idempotency_key: key.clone(),
        request_hash: request_hash.clone(),
    };
    let error = match tokio::time::timeout(state.database_timeout, state.db.insert_file(&new)).await {
        Ok(Ok(row)) => return Ok(Recorded::New(row)),
        Ok(Err(sqlx::Error::Database(e))) if e.is_unique_violation() && key.is_some() => {
            // Another request with the same key committed first.
            upload::discard(&state.storage, id).await;
            let key = key.as_deref().unwrap_or_default();
            let first = state.db(state.db.find_idempotent(token_id, key, idempotency::WINDOW)).await?;
            let first = first.ok_or_else(|| ApiError::internal("idempotency key taken but no row found"))?;
            return replay(first, request_hash.as_deref());
        }
        Ok(Err(e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Database(_)))) => {
            // Never sent, or refused by Postgres: no row.
            upload::discard(&state.storage, id).await;
            return Err(ApiError::from_database(e));
        }
        Ok(Err(e)) => ApiError::from_database(e),
        Err(_) => database_timeout(state.database_timeout),
    };
    // The insert may or may not have committed: delete the row if it is there, and only then
    // the content.
    match state.db(state.db.delete_file(id)).await {
        Ok(_) => upload::discard(&state.storage, id).await,
        Err(_) => tracing::error!(
            file_id = %id,
            "the insert's outcome is unknown and Postgres is unreachable: the content is kept so that a \
             committed row has its file"
        ),
    }
    Err(error)
}

fn replay(first: FileRecord, request_hash: Option<&str>) -> Result<Recorded, ApiError> {
    if first.request_hash.as_deref() == request_hash {
        Ok(Recorded::Replay(first))
    } else {
        Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for another request within the last 24 hours",
        ))
    }
}

/// Adds the file's job. A failure is logged, not answered: the row is committed, and worker-svc's
/// reconciler enqueues every `queued` row whose job is missing.
async fn enqueue(state: &AppState, id: Uuid) {
    let job = FileJob::new(id);
    match state.files.add(queue_core::DEFAULT_JOB_NAME, &job, platform::jobs::file_job_options(&job)).await {
        Ok(_) => tracing::debug!(file_id = %id, "job enqueued"),
        Err(e) => tracing::warn!(
            file_id = %id,
            error = %e,
            "file recorded but its job was not enqueued; worker-svc's reconciler will enqueue it"
        ),
    }
}

fn accepted(row: &FileRecord, replayed: bool) -> HttpResponse {
    let body = Accepted::of(row);
    let mut response = HttpResponse::Accepted();
    response.insert_header((header::LOCATION, body.links.this.clone()));
    if replayed {
        response.insert_header((REPLAYED_HEADER, "true"));
    }
    response.json(body)
}

/// A file's metadata, status (with live progress while processing), result, error and callback
/// deliveries.
#[utoipa::path(
    get,
    path = "/v1/files/{id}",
    tag = "files",
    params(("id" = Uuid, Path, description = "the file's id")),
    responses(
        (status = 200, body = FileView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let record = state.db(state.db.get_file(id)).await?.ok_or(ApiError::NotFound("file"))?;
    let progress = match record.status() {
        FileStatus::Processing => progress(&state, id).await,
        _ => None,
    };
    let deliveries = match record.callback_url {
        Some(_) => Some(state.db(state.db.deliveries(id)).await?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(FileView::new(record, progress, deliveries)))
}

/// The job's progress, or `None` when Redis cannot say (the rest of the answer does not need it).
async fn progress(state: &AppState, id: Uuid) -> Option<serde_json::Value> {
    match state.files.get_job(&id.to_string()).await {
        Ok(job) => job.map(|j| j.progress),
        Err(e) => {
            tracing::debug!(file_id = %id, error = %e, "progress unavailable");
            None
        }
    }
}

/// List parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only files in this status: `queued`, `processing`, `done` or `failed`.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{32}$")]
    pub cursor: Option<String>,
}

/// Files, newest first, a page at a time (keyset pagination: pages stay stable while files are
/// added).
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "files",
    params(ListQuery),
    responses(
        (status = 200, body = FileList),
        (status = 400, description = "invalid_query or invalid_cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    _caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(FileStatus::parse(raw).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "status is one of queued, processing, done, failed")
        })?),
    };
    let limit = match query.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_query", format!("limit is 1 to {MAX_LIMIT}")))?,
    };
    let after = match query.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            cursor::decode(raw)
                .ok_or_else(|| ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave"))?,
        ),
    };
    let mut rows = state.db(state.db.list_files(status, limit as i64 + 1, after)).await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| cursor::encode((r.created_at, r.id)))
    } else {
        None
    };
    let items = rows.into_iter().map(|r| FileView::new(r, None, None)).collect();
    Ok(HttpResponse::Ok().json(FileList { items, next_cursor }))
}

/// Deletes a file: its job if still waiting, its content and artifacts, its row. Refused (409)
/// while a worker processes it.
#[utoipa::path(
    delete,
    path = "/v1/files/{id}",
    tag = "files",
    params(("id" = Uuid, Path, description = "the file's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "file_processing", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let record = state.db(state.db.get_file(id)).await?.ok_or(ApiError::NotFound("file"))?;
    let processing = || ApiError::conflict("file_processing", "the file is being processed; delete it once it is done");
    if record.status() == FileStatus::Processing {
        return Err(processing());
    }
    match state.files.remove(&id.to_string()).await {
        Ok(()) | Err(queue_core::Error::JobNotFound(_)) => {}
        Err(queue_core::Error::JobLocked(_)) => return Err(processing()),
        Err(e) => return Err(ApiError::from_queue(e)),
    }
    if !state.db(state.db.delete_file(id)).await? {
        return Err(ApiError::NotFound("file"));
    }
    if let Err(e) = state.storage.delete_file(id).await {
        tracing::error!(file_id = %id, error = %e, "file deleted but its content could not be: the objects are orphans");
    }
    tracing::info!(file_id = %id, "file deleted");
    Ok(HttpResponse::NoContent().finish())
}
