//! Every error the API answers with, in one enum and one [`ResponseError`] impl: a stable
//! snake_case `code`, a human `message`, and the status chosen in one `match`.
//!
//! Bodies are `{"error": {"code": "...", "message": "..."}}`. A 5xx body says nothing internal;
//! its cause goes to the log once, here, inside the request's span (which carries the request
//! id). A dependency that is down answers 503 with `Retry-After`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// A dependency the API needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dependency {
    /// Redis (the `files` queue).
    Redis,
    /// Postgres (the system of record).
    Postgres,
    /// The file store.
    Storage,
}

impl Dependency {
    fn code(self) -> &'static str {
        match self {
            Dependency::Redis => "redis_unavailable",
            Dependency::Postgres => "database_unavailable",
            Dependency::Storage => "storage_unavailable",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dependency::Redis => "redis",
            Dependency::Postgres => "postgres",
            Dependency::Storage => "storage",
        }
    }
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No bearer token, or one that matches no configured token.
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// No such file, artifact or route.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists, the method does not; the methods it has, for `Allow` (e.g. `GET, HEAD`).
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The request is malformed; `code` says how.
    #[error("{message}")]
    BadRequest {
        /// Stable snake_case code.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// The upload exceeds `MAX_UPLOAD_BYTES`.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request conflicts with the file's state or an earlier request; `code` says how.
    #[error("{message}")]
    Conflict {
        /// Stable snake_case code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// A `Range` that the content cannot satisfy.
    #[error("the range cannot be satisfied for a content of {size} bytes")]
    RangeNotSatisfiable {
        /// The content's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// A dependency is unreachable or too slow; the cause goes to the log, not to the client.
    #[error("{} is unavailable, retry later", .dependency.name())]
    Unavailable {
        /// Which dependency.
        dependency: Dependency,
        /// The cause, for the log.
        cause: String,
    },
    /// Readiness failed: the names of the dependencies that did not answer.
    #[error("not ready: {} did not answer", .0.join(", "))]
    NotReady(Vec<&'static str>),
    /// A bug or an unexpected failure; the cause goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 with `code`.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// A 409 with `code`.
    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict { code, message: message.into() }
    }

    /// A 503 for `dependency`, logging `cause`.
    pub(crate) fn unavailable(dependency: Dependency, cause: impl std::fmt::Display) -> Self {
        ApiError::Unavailable { dependency, cause: cause.to_string() }
    }

    /// A 500, logging `cause`.
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// The stable code of the body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::Unavailable { dependency, .. } => dependency.code(),
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Maps a Postgres error: a connection that cannot be had or was lost is a 503, anything else
    /// a 500.
    pub(crate) fn from_database(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => ApiError::unavailable(Dependency::Postgres, e),
            other => ApiError::internal(format_args!("postgres: {other}")),
        }
    }

    /// Maps a Redis error: a timeout, a lost connection or a full budget is a 503.
    pub(crate) fn from_queue(e: queue_core::Error) -> Self {
        if e.is_retryable() || matches!(e, queue_core::Error::Closed) {
            ApiError::unavailable(Dependency::Redis, e)
        } else {
            ApiError::internal(format_args!("redis: {e}"))
        }
    }

    /// Maps a storage error met while serving (not while receiving an upload).
    pub(crate) fn from_storage(e: platform::storage::StorageError) -> Self {
        use platform::storage::StorageError;
        match e {
            StorageError::NotFound => ApiError::NotFound("content"),
            other => ApiError::unavailable(Dependency::Storage, other),
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object: a stable code and a message for humans.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable snake_case code, e.g. `unauthorized`, `payload_too_large`, `database_unavailable`.
    #[schema(example = "not_found")]
    pub code: String,
    /// What happened, for humans; never internal details.
    pub message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable { .. } | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Unavailable { dependency, cause } => {
                tracing::warn!(dependency = dependency.name(), cause = %cause, "answering 503");
            }
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "answering 500"),
            ApiError::NotReady(_) => tracing::info!(error = %self, "not ready"),
            _ => tracing::debug!(code = self.code(), error = %self, "answering {}", status.as_u16()),
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code().to_owned(), message: self.to_string() } };
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed(allow) => {
                // RFC 9110 §15.5.6: a 405 says which methods the resource has.
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            ApiError::Unavailable { .. } | ApiError::NotReady(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            ApiError::RangeNotSatisfiable { size } => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ApiError::TooLarge { .. } => {
                // The rest of the body may be unread: do not reuse the connection.
                response.force_close();
            }
            _ => {}
        }
        response.json(body)
    }
}

/// A Postgres call that took longer than the database timeout.
pub(crate) fn database_timeout(after: Duration) -> ApiError {
    ApiError::unavailable(Dependency::Postgres, format_args!("no answer within {}ms", after.as_millis()))
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body(e: &ApiError) -> serde_json::Value {
        let bytes = e.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn errors_are_json_with_a_stable_code_and_nothing_internal() {
        let e = ApiError::unavailable(Dependency::Postgres, "connection refused at 10.0.0.5:5432 password=x");
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.error_response().headers().get(header::RETRY_AFTER).unwrap(), "5");
        let json = body(&e);
        assert_eq!(json["error"]["code"], "database_unavailable");
        assert!(!json.to_string().contains("10.0.0.5"), "{json}");

        let json = body(&ApiError::internal("relation files does not exist"));
        assert_eq!(json, serde_json::json!({"error": {"code": "internal", "message": "internal error"}}));

        assert_eq!(ApiError::from_database(sqlx::Error::PoolTimedOut).code(), "database_unavailable");
        assert_eq!(ApiError::from_database(sqlx::Error::RowNotFound).code(), "internal");
        let range = ApiError::RangeNotSatisfiable { size: 10 }.error_response();
        assert_eq!(range.headers().get(header::CONTENT_RANGE).unwrap(), "bytes */10");
        assert_eq!(body(&ApiError::Unauthorized)["error"]["code"], "unauthorized");
        let not_allowed = ApiError::MethodNotAllowed("GET, HEAD").error_response();
        assert_eq!(not_allowed.headers().get(header::ALLOW).unwrap(), "GET, HEAD");
    }
}
