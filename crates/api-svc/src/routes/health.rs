//! `/livez` (the process answers), `/readyz` (Redis, Postgres and the store answer, each within
//! [`CHECK_TIMEOUT`]; otherwise 503 naming what failed) and `/metrics` (Prometheus text). None
//! needs a token, and none opens a connection: readiness asks the process's own ones, and the
//! metrics read their statistics. Operators keep them off the public internet.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::views::{Liveness, Readiness};

/// How long each readiness check may take.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, body = Liveness)))]
pub(crate) async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok".to_owned() })
}

/// The metrics, in the Prometheus text format (`crate::metrics` lists them).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((
        status = 200,
        description = "request, upload, Redis connection and Postgres pool metrics",
        body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8",
    ))
)]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type(platform::metrics::CONTENT_TYPE).body(state.metrics.encode())
}

/// Every dependency answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, body = Readiness),
        (status = 503, description = "a dependency did not answer; the message names it", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let check = |name: &'static str, outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => Ok(name),
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            Err(name)
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out after {}ms", CHECK_TIMEOUT.as_millis());
            Err(name)
        }
    };
    let (redis, postgres, storage) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, async { state.connections.ping().await.map_err(|e| e.to_string()) }),
        tokio::time::timeout(CHECK_TIMEOUT, async { state.db.ping().await.map_err(|e| e.to_string()) }),
        tokio::time::timeout(CHECK_TIMEOUT, async { state.storage.ping().await.map_err(|e| e.to_string()) }),
    );
    let results = [check("redis", redis), check("postgres", postgres), check("storage", storage)];
    let failed: Vec<&'static str> = results.iter().filter_map(|r| r.err()).collect();
    if !failed.is_empty() {
        return Err(ApiError::NotReady(failed));
    }
    let checks: BTreeMap<String, String> =
        results.iter().flatten().map(|name| (name.to_string(), "ok".to_owned())).collect();
    Ok(HttpResponse::Ok().json(Readiness { status: "ready".to_owned(), checks }))
}
